"""``thinkfast distill``: load the teacher, build the student, run the stages, save the student.

Outputs, under the run's output directory:

- ``checkpoints/``: resumable checkpoints (see :mod:`thinkfast.distill.checkpoint`);
- ``metrics.jsonl``: one line per logged step (see :mod:`thinkfast.distill.metrics`);
- ``student/``: the final student as a model directory (``config.json``, ``model.safetensors``,
  tokenizer files) that ``generate``, ``evaluate`` and ``profile`` load;
- ``recipe.toml``: the resolved recipe the run used.
"""

from __future__ import annotations

import functools
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as recompute

from thinkfast.data.packing import PackedLoader, TokenizedCorpus
from thinkfast.data.training import TrainingData, training_data, training_examples
from thinkfast.distill import checkpoint as ckpt
from thinkfast.distill.config import StageSection
from thinkfast.distill.distributed import DistContext, init_distributed, shard_student, shutdown_distributed
from thinkfast.distill.metrics import MetricsLog, ProgressDisplay
from thinkfast.distill.trainer import StepCallback, TrainContext, train_stage
from thinkfast.errors import EngineUnavailableError, ModelLoadError, RecipeError
from thinkfast.output_lock import exclusive_output

STUDENT_DIR = "student"
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"


def compute_dtypes(dtype_name: str, device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
    """``(teacher weight dtype, autocast dtype or None)`` for ``run.dtype`` on ``device``.

    The student keeps float32 master weights; on a GPU it computes under bfloat16 autocast and
    the teacher is stored and run in bfloat16 too. On the CPU everything is float32 unless
    ``run.dtype = "bfloat16"``.
    """
    if dtype_name == "float16":
        raise RecipeError(["run.dtype: 'float16' training is not supported (no loss scaling); use 'bfloat16'"])
    if dtype_name == "bfloat16" or (dtype_name == "auto" and device.type == "cuda"):
        return torch.bfloat16, torch.bfloat16
    return torch.float32, None


def data_key(stage: StageSection) -> str:
    """Stages with equal ``data`` tables read the same training data."""
    from thinkfast.config.validate import to_dict

    return repr(to_dict(stage.data))


def read_stage_data(stages: list[tuple[int, StageSection]]) -> dict[str, TrainingData]:
    """Everything ``stages`` (``(index, stage)`` pairs) train on, read (and checked) without a tokenizer,
    keyed by :func:`data_key`.

    Runs before the teacher is loaded: a missing data file, a malformed line or an empty selection
    stops ``distill`` before any work, with a :class:`~thinkfast.errors.DataError` naming the file or
    the stage's ``data`` key.
    """
    data: dict[str, TrainingData] = {}
    for index, stage in stages:
        key = data_key(stage)
        if key not in data:
            data[key] = training_data(stage.data, key=f"distill.stages[{index}].data")
    return data


def stage_loader(stage: StageSection, tokenizer: Any, ctx: DistContext, seed: int,
                 cache: dict[str, TokenizedCorpus], data: dict[str, TrainingData] | None = None) -> PackedLoader:
    """The packed, resumable batch stream of ``stage`` (tokenised examples are shared between stages).

    ``data``: the stages' training data from :func:`read_stage_data` (read here when missing).
    """
    read = data_key(stage)
    key = repr((read, stage.loss_on))
    if key not in cache:
        examples = training_examples(stage.data, tokenizer, data=(data or {}).get(read))
        if stage.loss_on == "all":
            examples = [(ids, [True] * len(ids)) for ids, _ in examples]
        cache[key] = TokenizedCorpus(examples)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return PackedLoader(cache[key], stage.seq_len, stage.batch_size, int(pad), seed=seed, rank=ctx.rank,
                        world_size=ctx.world_size)


def enable_activation_checkpointing(student: nn.Module) -> None:
    """Recompute every block's activations in the backward pass (parameter names are unchanged)."""
    for block in student.layers:
        block.forward = functools.partial(recompute, block.forward, use_reentrant=False)


def load_models(recipe: Any, device: torch.device, teacher_dtype: torch.dtype, needs_teacher: bool,
                kernels: Any) -> tuple[nn.Module | None, nn.Module, Any]:
    """``(teacher or None, student, tokenizer)``: the student is converted from the teacher or loaded; both
    use ``kernels`` (:func:`thinkfast.kernels.select_kernels`, chosen before anything loads).

    The teacher may also be a thinkfast model directory (e.g. a teacher fine-tuned by an ``sft`` run).
    """
    from thinkfast.models import build_student, load_any, load_model

    teacher, tokenizer = None, None
    if recipe.teacher.model:
        teacher, tokenizer = load_any(recipe.teacher, dtype=torch.float32, what="teacher")
    elif needs_teacher:
        raise RecipeError(["teacher.model: the matrix/hidden/kd stages need a teacher; set it to a hub id, "
                           "a local directory or a .gguf file"])
    if recipe.student.checkpoint:
        student, student_tok = load_model(recipe.student.checkpoint, dtype=torch.float32)
        tokenizer = tokenizer or student_tok
    elif teacher is not None:
        student = build_student(teacher, recipe.student.kind, recipe.student.options)
    else:
        raise RecipeError(["student.checkpoint: without a teacher, give a saved student directory to train"])
    if tokenizer is None:  # thinkfast directories saved without their tokenizer files
        where, hint = ((recipe.teacher.model, " or set [teacher].tokenizer") if recipe.teacher.model
                       else (recipe.student.checkpoint, ""))
        raise ModelLoadError(f"{where}: no tokenizer files found next to the model; save the model with its "
                             f"tokenizer{hint}")
    if teacher is not None:
        teacher = teacher.to(device=device, dtype=teacher_dtype).eval().requires_grad_(False).set_kernels(kernels)
    return teacher, student.to(device=device, dtype=torch.float32).set_kernels(kernels), tokenizer


def check_model_files(recipe: Any) -> None:
    """The cheap checks of the local model directories a run loads (teacher, student checkpoint): a missing
    or truncated weights file stops the run before the other model is loaded."""
    from thinkfast.models.io import check_local_model

    for spec in (recipe.teacher.model, recipe.student.checkpoint):
        path = Path(spec).expanduser() if spec else None
        if path is not None and path.is_dir():
            check_local_model(path)


def _unwrapped_copy(student: nn.Module, strategy: str, ctx: DistContext) -> nn.Module | None:
    """A plain CPU copy of ``student`` on rank 0 (gathering FSDP shards), None elsewhere."""
    if strategy != "fsdp" or not ctx.distributed:
        return student if ctx.is_main else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from thinkfast.models import ThinkfastLM

    state = get_model_state_dict(student, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not ctx.is_main:
        return None
    copy = ThinkfastLM(student.config, device="cpu")
    copy.load_state_dict(state)
    return copy


def run_distill(recipe: Any, output_dir: Path, *, resume: bool = False, progress: bool | None = None,
                on_step: StepCallback | None = None, console: Any = None) -> Path:
    """Run every stage of ``recipe.distill``; return the final student directory.

    ``resume`` continues from ``<output_dir>/checkpoints/latest`` (bit-for-bit on the CPU);
    ``progress`` None follows ``distill.progress``. ``on_step`` is called after every optimizer step.
    ``console`` (a rich console) hears the warnings about the training data and shows the progress (stderr by
    default), on the main process.
    """
    section = recipe.distill
    if not section.stages:
        raise RecipeError([f"{recipe.source}: distill.stages: no stages; add [[distill.stages]] tables"])
    ctx = init_distributed(recipe.run.device)
    try:
        with ExitStack() as hold:
            if ctx.is_main and output_dir.is_dir():  # the CLI has made it; rank 0 alone writes in it
                hold.enter_context(exclusive_output(output_dir, "distill"))
            return _run(recipe, output_dir, ctx, resume, progress, on_step, console)
    finally:
        shutdown_distributed()


#: Recipe keys that may change between a run and its ``--resume`` (they do not change what is trained).
RESUMABLE_CHANGES = ("run.name", "run.device", "run.output_dir", "distill.progress", "generate", "evaluate",
                     "profile", "kernels")


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted key paths where two plain (TOML-shaped) values differ, down to the entry of a list of equal
    length (``distill.stages[1].lr``); lists of other lengths differ as a whole."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in sorted(set(old) | set(new))
                for d in _differences(old.get(key), new.get(key), f"{path}.{key}" if path else key)]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new) \
            and any(isinstance(v, (dict, list)) for v in (*old, *new)):
        return [d for i, (a, b) in enumerate(zip(old, new, strict=True)) for d in _differences(a, b, f"{path}[{i}]")]
    return [] if old == new else [path]


def _check_same_training(saved: Path, recipe: Any) -> None:
    """Refuse ``--resume`` under a recipe that trains differently from the one the checkpoints came from."""
    from thinkfast.config.loader import read_toml, tomllib
    from thinkfast.config.toml_writer import dumps
    from thinkfast.config.validate import to_dict

    if not saved.exists():
        return
    current = tomllib.loads(dumps(to_dict(recipe)))
    changed = [key for key in _differences(read_toml(saved), current)
               if not any(key == ok or key.startswith(ok + ".") for ok in RESUMABLE_CHANGES)]
    if changed:
        raise ckpt.CheckpointError(
            f"--resume: the recipe differs from the one this run started with ({saved}) at "
            f"{', '.join(changed)}; resume with the same recipe and --set overrides, or start a new --output-dir")


def _run(recipe: Any, output_dir: Path, ctx: DistContext, resume: bool, progress: bool | None,
         on_step: StepCallback | None, console: Any) -> Path:
    from thinkfast.config.toml_writer import dumps
    from thinkfast.config.validate import check_input_files, to_dict
    from thinkfast.kernels import select_kernels
    from thinkfast.models import save_model

    section = recipe.distill
    strategy = "ddp" if section.strategy == "auto" else section.strategy
    if strategy == "fsdp" and ctx.distributed and any(s.kind == "matrix" for s in section.stages):
        raise RecipeError(["distill.strategy: 'fsdp' cannot run 'matrix' stages (they call the mixers outside "
                           "their forward); use strategy = 'ddp'"])
    checkpoint_dir = output_dir / CHECKPOINT_DIR
    resume_path = ckpt.latest_checkpoint(checkpoint_dir) if resume else None
    if resume and resume_path is None:
        raise ckpt.CheckpointError(f"--resume: no checkpoint in {checkpoint_dir}; run without --resume to start")
    position = ckpt.read_position(resume_path) if resume_path else None
    if resume_path is not None:  # on every process: a rank the checkpoint has no state for must not go on alone
        ckpt.check_processes(resume_path, ctx.world_size)
    if resume_path is not None and ctx.is_main:
        _check_same_training(output_dir / "recipe.toml", recipe)
    if not resume and ckpt.latest_checkpoint(checkpoint_dir) is not None and ctx.is_main:
        raise ckpt.CheckpointError(f"{checkpoint_dir} already holds a checkpoint; pass --resume to continue it "
                                   f"or choose another --output-dir")

    # the inputs, checked before the models load (seconds to minutes) and before anything is written
    stages = [(i, s) for i, s in enumerate(section.stages) if position is None or i >= position.stage_index]
    for i, stage in stages:  # the stages still to run: a finished stage's data may be gone on --resume
        check_input_files(stage, source=recipe.source, path=f"distill.stages[{i}]",
                          overrides=recipe.override_spans)
    needs_teacher = any(s.kind != "sft" for s in section.stages)
    if needs_teacher:  # a missing .gguf teacher, named by its recipe key (a directory or hub id: when it loads)
        check_input_files(recipe.teacher, source=recipe.source, path="teacher", overrides=recipe.override_spans)
    check_model_files(recipe)
    stage_data = read_stage_data(stages)
    if console is not None and ctx.is_main:
        for warning in dict.fromkeys(w for data in stage_data.values() for w in data.warnings):
            console.print(f"[yellow]warning:[/yellow] {warning}")
    kernels = select_kernels(recipe.kernels, ctx.device)  # a kernel the device cannot run: before the models load

    torch.manual_seed(recipe.run.seed)
    teacher_dtype, autocast_dtype = compute_dtypes(recipe.run.dtype, ctx.device)
    teacher, student, tokenizer = load_models(recipe, ctx.device, teacher_dtype, needs_teacher, kernels)
    if position is not None and position.step == 0:  # at a stage boundary: weights only
        ckpt.load_checkpoint(resume_path, student)
    if section.activation_checkpointing:
        enable_activation_checkpointing(student)
    if strategy == "fsdp" and ctx.distributed:
        if ctx.device.type != "cuda":
            raise EngineUnavailableError("distill.strategy = 'fsdp' needs CUDA GPUs; use 'ddp' on the CPU")
        shard_student(student, ctx.device, autocast_dtype)
        autocast_dtype = None  # FSDP2's mixed-precision policy casts instead
    if section.compile:
        student.compile()

    show = section.progress if progress is None else progress
    tc = TrainContext(ctx=ctx, student=student, teacher=teacher, checkpoint_dir=checkpoint_dir, metrics=None,
                      progress=ProgressDisplay(show and ctx.is_main, console), strategy=strategy,
                      autocast_dtype=autocast_dtype, keep_checkpoints=section.keep_checkpoints, on_step=on_step,
                      elapsed_before=position.elapsed_s if position else 0.0)

    def start() -> None:
        """The run starts: write recipe.toml and start metrics.jsonl (right before the first optimizer step,
        after the first stage's data is tokenised and its first batch checked, so that a run that fails to
        start leaves no files behind, nor touches earlier ones)."""
        if ctx.is_main:
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / "recipe.toml").write_text(dumps(to_dict(recipe)))
            tc.metrics = MetricsLog(output_dir / METRICS_FILE,
                                    resume_global_step=position.global_step if position else None)

    tc.on_start = start
    corpora: dict[str, TokenizedCorpus] = {}
    global_step = position.global_step if position else 0
    try:
        for index, stage in stages:
            loader = stage_loader(stage, tokenizer, ctx, recipe.run.seed, corpora, stage_data)
            here = position if position is not None and position.stage_index == index else None
            global_step = train_stage(tc, index, stage, loader, here, resume_path, global_step)
    finally:  # an error or Ctrl-C: the bar stops before the CLI's message, which stays the last line
        tc.progress.close()
    tc.start()  # resumed after the last step: only the student is left to save

    final = _unwrapped_copy(student, strategy, ctx)
    out = output_dir / STUDENT_DIR
    if final is not None:
        for block in final.layers:  # drop the activation-checkpointing wrappers before saving
            block.__dict__.pop("forward", None)
        save_model(final, tokenizer, out)
    return out
