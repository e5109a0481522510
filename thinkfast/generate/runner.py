"""``thinkfast generate`` end to end: model + problems -> prompts -> engine -> samples.jsonl / run.json."""

from __future__ import annotations

import hashlib
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from thinkfast.data.answers import ANSWER_END_FORMATS
from thinkfast.devices import DTYPES, device_name, resolve_device, resolve_dtype
from thinkfast.errors import ModelLoadError, ThinkfastError
from thinkfast.generate.distributed import (
    ProcessGroup,
    merge_rank_stats,
    rank_stats_name,
    read_rank_stats,
    shard,
)
from thinkfast.generate.engine import Engine, EngineSettings, Finished, Request
from thinkfast.generate.output import (
    RUN,
    SAMPLES,
    RunClock,
    SampleRecord,
    SampleWriter,
    accounted_wall_seconds,
    check_settings,
    mark_running,
    merge_samples,
    problem_seconds,
    read_done,
    read_run_json,
    shard_files,
    shard_name,
    write_json,
)
from thinkfast.generate.sampling import SamplingParams, problem_key
from thinkfast.generate.stops import CUT_REASONS, StopChecker
from thinkfast.job import DistEnv
from thinkfast.models import pointwise
from thinkfast.output_lock import exclusive_output
from thinkfast.progress import sample_progress
from thinkfast.tables import format_number


@dataclass
class PendingProblem:
    """A problem with the sample indices still missing from the output directory."""

    problem: Any  # thinkfast.data.Problem
    prompt_ids: list[int]
    missing: tuple[int, ...]


def run_settings(recipe: Any, model_spec: str, answer_format: str | None,
                 few_shot: list[Any] | None = None) -> dict[str, Any]:
    """What decides the samples; a resumed run must match it exactly. ``stop_at_answer`` is recorded as
    in effect: whether the answer rule ends samples (``answer_format``, from :func:`answer_stop_format`);
    ``few_shot`` are the worked examples, recorded by :func:`example_fingerprint` so that a resume notices
    when the data they come from changed."""
    gen = recipe.generate
    data = gen.data
    return {
        "model": model_spec, "dataset": data.dataset, "path": data.path, "split": data.split,
        "template": data.template, "few_shot": data.few_shot, "instruction": data.instruction,
        "dataset_options": data.options, "n_samples": gen.n_samples, "temperature": gen.temperature,
        "top_p": gen.top_p, "top_k": gen.top_k, "min_p": gen.min_p, "max_new_tokens": gen.max_new_tokens,
        "stop": list(gen.stop), "stop_on_special_tokens": gen.stop_on_special_tokens,
        "stop_at_answer": answer_format is not None, "seed": recipe.run.seed,
        "few_shot_examples": [example_fingerprint(p) for p in few_shot or []],
    }


def example_fingerprint(problem: Any) -> str:
    """``"<id> <10 hex digits>"``: a worked example's id and a digest of the text a prompt shows of it (its
    question, solution and answer), which changes when the data file does even where the id does not."""
    text = "\n".join((problem.question, problem.solution or "", problem.answer))
    return f"{problem.id} {hashlib.sha1(text.encode('utf-8')).hexdigest()[:10]}"


def answer_stop_format(plugin: Any, stop_at_answer: bool) -> str | None:
    """The answer format the stop checker ends samples by (``generate.stop_at_answer``), or None.

    Only for a plugin that grades with its format's own extractor (it overrides neither
    ``extract_answer`` nor ``check``): the answer rule is exact for that extractor, not for another one.
    """
    from thinkfast.data.base import DatasetPlugin

    kind = type(getattr(plugin, "inner", plugin))  # a GuardedDataset's plugin, or a plugin itself
    if not stop_at_answer or kind.extract_answer is not DatasetPlugin.extract_answer \
            or kind.check is not DatasetPlugin.check or plugin.answer_format not in ANSWER_END_FORMATS:
        return None
    return plugin.answer_format


def eos_token_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """The model's EOS ids (``config.eos_token_ids``), else the tokenizer's ``eos_token_id``."""
    ids = list(getattr(model.config, "eos_token_ids", None) or [])
    if not ids and tokenizer.eos_token_id is not None:
        ids = [tokenizer.eos_token_id]
    return tuple(int(i) for i in ids)


def stop_token_ids(model: Any, tokenizer: Any, special_tokens: bool) -> tuple[int, ...]:
    """The ids that end a sample (finish reason ``eos``): the model's EOS ids (:func:`eos_token_ids`), then,
    with ``special_tokens``, the tokenizer's special tokens (``all_special_ids``: BOS, EOS, PAD, UNK, chat
    control tokens) in ascending order. Duplicates and ids the model cannot sample (outside its vocabulary)
    are left out."""
    ids = list(eos_token_ids(model, tokenizer))
    if special_tokens:
        vocab = model.config.vocab_size
        ids += sorted(int(i) for i in (getattr(tokenizer, "all_special_ids", None) or [])
                      if i is not None and 0 <= int(i) < vocab)
    return tuple(dict.fromkeys(ids))


def missing_samples(problems: list[Any], n_samples: int,
                    done: dict[tuple[str, int], Any]) -> list[tuple[Any, tuple[int, ...]]]:
    """``(problem, sample indices not yet in the output directory)`` for problems that miss any."""
    out = []
    for problem in problems:
        missing = tuple(s for s in range(n_samples) if (problem.id, s) not in done)
        if missing:
            out.append((problem, missing))
    return out


def render_prompts(work: list[tuple[Any, tuple[int, ...]]], plugin: Any, tokenizer: Any,
                   recipe: Any, few_shot: list[Any]) -> list[PendingProblem]:
    """Render and tokenise the prompts of the problems in ``work`` (``few_shot``: the worked examples)."""
    from thinkfast.data.render import prompt_ids

    data = recipe.generate.data
    instruction = data.instruction or plugin.instruction
    return [PendingProblem(problem, prompt_ids(problem, tokenizer, data.template, few_shot, instruction,
                                               answer_format=plugin.answer_format), missing)
            for problem, missing in work]


def run_generate(recipe: Any, out_dir: Path, console: Any = None) -> dict[str, Any]:
    """Generate the samples ``recipe`` asks for into ``out_dir``; returns what ``run.json`` holds (rank 0)."""
    from thinkfast.data import load_problems, no_problems_error
    from thinkfast.kernels import select_kernels
    from thinkfast.models.teacher import load_any

    env = DistEnv.from_env()
    group = ProcessGroup(env)
    hold = ExitStack()
    try:
        gen = recipe.generate
        device = resolve_device(recipe.run.device, env.local_rank if env.distributed else None)
        dtype = resolve_dtype(recipe.run.dtype, device)
        spec: Any = gen.model or recipe.teacher
        model_spec = gen.model or recipe.teacher.model
        if not model_spec:
            raise ThinkfastError("no model: set generate.model (a model directory or teacher) or [teacher].model, "
                                 "or pass --model")
        out_dir.mkdir(parents=True, exist_ok=True)
        if env.is_main:  # before the other ranks pass from_main below, so before any rank writes a sample
            hold.enter_context(exclusive_output(out_dir, "generate"))
        plugin, problems = load_problems(gen.data)
        answer_format = answer_stop_format(plugin, gen.stop_at_answer)
        d = gen.data
        few_shot = plugin.few_shot_problems(d) if d.few_shot else []  # read and checked before the model loads
        settings = run_settings(recipe, model_spec, answer_format, few_shot)
        check_settings(out_dir, settings)
        if not problems:
            raise no_problems_error("generate.data", d)
        if d.limit and len(problems) < d.limit and console is not None and env.is_main:
            console.print(f"[yellow]warning:[/yellow] generate.data.limit is {d.limit}, but dataset {d.dataset!r} "
                          f"(split {d.split!r}) has only {len(problems)} problems from offset {d.offset}; "
                          f"generating those {len(problems)}")
        done = read_done(out_dir)
        # the run's time on record, taken by rank 0 before any rank writes a sample (see distributed)
        accounted = group.from_main(accounted_wall_seconds(read_run_json(out_dir), done.values())
                                    if env.is_main else 0.0)
        work = missing_samples(shard(problems, env.rank, env.world_size), gen.n_samples, done)
        model: Any = None
        todo: list[PendingProblem] = []
        if work:  # a finished run does not load the model again
            kernels = select_kernels(recipe.kernels, device)  # a kernel the device cannot run: before loading
            model, tokenizer = load_any(spec, dtype=dtype, device=device)
            if tokenizer is None:  # [teacher].tokenizer is read only for the teacher, not for --model
                raise ModelLoadError(f"{model_spec}: no tokenizer files found next to the model; save the model "
                                     f"with its tokenizer" + ("" if gen.model else " or set [teacher].tokenizer"))
            model.set_kernels(kernels).eval()
            todo = render_prompts(work, plugin, tokenizer, recipe, few_shot)
        if env.is_main:  # every rank's missing samples, not only this rank's shard
            work_left = bool(missing_samples(problems, gen.n_samples, done))
            mark_running(out_dir, settings, work_left=work_left)
            if work_left and not work and console is not None:  # rank 0 shows no progress: say why
                others = "rank 1 generates" if env.world_size == 2 else f"ranks 1-{env.world_size - 1} generate"
                console.print(f"rank 0's share of the samples is done; {others} the rest (only rank 0 shows "
                              f"progress)")

        clock = RunClock(accounted)
        new_records, graph = _generate_shard(todo, model, tokenizer, recipe, device, dtype, out_dir, env, console,
                                             clock, answer_format) if todo else ([], {})
        wall = clock.elapsed()
        stats = {"rank": env.rank, "device": device_name(device), "wall_seconds": wall,
                 "generated_tokens": sum(r.num_tokens for r in new_records), "new_samples": len(new_records),
                 "student": None if model is None else getattr(model.config, "student", ""), **graph}
        write_json(out_dir / rank_stats_name(env.rank), stats)
        group.barrier()
        if not env.is_main:
            return {}
        merged = merge_rank_stats(read_rank_stats(out_dir, env.world_size))
        if env.distributed or shard_files(out_dir):
            merge_samples(out_dir, [p.id for p in problems])
        previous = read_run_json(out_dir)
        summary = _summary(recipe, settings, dtype, out_dir, problems, merged, env, previous, accounted)
        if merged["new_samples"] == 0 and previous.get("status") == "complete" \
                and previous.get("num_samples") == summary["num_samples"]:
            # nothing was generated: the finished run's summary (its engine timings, throughput, batch size)
            # stays as it is instead of being replaced by an empty invocation's
            return {**previous, "new_samples": 0, "new_tokens": 0, "tokens_per_second": 0.0}
        write_json(out_dir / RUN, summary)
        return summary
    finally:
        group.close()
        hold.close()


def progress_label(env: DistEnv) -> str:
    """The progress bar's label: under torchrun it says that the bar counts rank 0's share (its samples and
    tokens/s), not the job's."""
    return f"generate (rank 0 of {env.world_size})" if env.distributed else "generate"


def _generate_shard(todo: list[PendingProblem], model: Any, tokenizer: Any, recipe: Any, device: torch.device,
                    dtype: torch.dtype, out_dir: Path, env: DistEnv, console: Any, clock: RunClock,
                    answer_format: str | None = None) -> tuple[list[SampleRecord], dict[str, Any]]:
    """Run the engine over this rank's pending problems, appending each sample as it finishes.

    ``clock``: stamps each sample with the run's total generation seconds (``total_wall_seconds``).
    ``answer_format``: end samples once their answer is complete (:func:`answer_stop_format`).

    Returns the new records and whether the decode step ran as a CUDA graph (and why not).
    """
    gen = recipe.generate
    total = sum(len(p.missing) for p in todo)
    settings = EngineSettings(
        batch_size=min(gen.batch_size, total),
        max_seqlen=max(len(p.prompt_ids) for p in todo) + gen.max_new_tokens,
        max_new_tokens=gen.max_new_tokens,
        sampling=SamplingParams(gen.temperature, gen.top_p, gen.top_k, gen.min_p),
        seed=recipe.run.seed, eos_ids=stop_token_ids(model, tokenizer, gen.stop_on_special_tokens),
        check_every=gen.check_every,
        cuda_graphs=gen.cuda_graphs, dtype=dtype, state_dtype=DTYPES[gen.state_dtype],
        prefill_tokens=gen.prefill_tokens, prefill_padding=gen.prefill_padding, prefill_bucket=gen.prefill_bucket,
        overlap_prefill=gen.overlap_prefill,
        compile=gen.compile and device.type == "cuda",
    )

    def decode(tokens: Any) -> str:
        return tokenizer.decode(list(tokens), skip_special_tokens=True)

    announce = settings.compile and console is not None and env.is_main
    if announce:
        console.print("compiling the decode step (torch.compile; seconds to a minute, once per run)")
    engine = Engine(model, settings, StopChecker(gen.stop, decode, answer_format))
    if announce:
        if engine.compile_error:
            console.print(f"[yellow]warning:[/yellow] the decode step could not be compiled, running it uncompiled "
                          f"({engine.compile_error}); --no-compile skips the attempt")
        else:
            console.print(f"compiled in {engine.compile_seconds:.1f} s (decode step, and prefill kernels if large "
                          f"prefills come)")
    requests = [Request(torch.tensor(p.prompt_ids, dtype=torch.long), problem_key(p.problem.id), p.missing)
                for p in todo]
    path = out_dir / (shard_name(env.rank) if env.distributed else SAMPLES)
    records: list[SampleRecord] = []
    eos = set(settings.eos_ids)
    tokens_seen = 0
    started = time.perf_counter()
    bar = sample_progress(progress_label(env), console, disable=not env.is_main)
    with SampleWriter(path) as writer, bar as progress:
        task = progress.add_task("generate", total=total, rate="")

        def on_progress(tokens: int) -> None:
            nonlocal tokens_seen
            tokens_seen += tokens
            rate = tokens_seen / max(time.perf_counter() - started, 1e-9)
            progress.update(task, rate=f"{format_number(rate)} tok/s")

        for item in engine.generate(requests, on_progress=on_progress):
            record = _record(item, todo[item.request], plugin_name=gen.data.dataset, eos=eos, decode=decode,
                             total_wall_seconds=clock.total())
            writer.write(record)
            records.append(record)
            progress.advance(task)
    prefill_errors = pointwise.compile_errors()
    if prefill_errors and console is not None:
        console.print(f"[yellow]warning:[/yellow] some prefill pieces could not be compiled and ran uncompiled: "
                      f"{prefill_errors}; --no-compile skips the attempt")
    return records, {"cuda_graph": engine.uses_cuda_graph, "graph_error": engine.graph_error,
                     "compiled": engine.compiled,
                     "compile_seconds": engine.compile_seconds, "compile_error": engine.compile_error,
                     "prefill_compile_errors": prefill_errors,
                     "engine": engine.timings}


def _record(item: Finished, pending: PendingProblem, *, plugin_name: str, eos: set[int], decode: Any,
            total_wall_seconds: float) -> SampleRecord:
    if item.finish_reason in CUT_REASONS:  # the stop checker's cut text
        text = item.stop_text or ""
    else:
        body = item.tokens[:-1] if item.tokens and item.tokens[-1] in eos else item.tokens
        text = decode(body)
    problem = pending.problem
    return SampleRecord(problem_id=problem.id, sample_index=item.sample_index, text=text,
                        num_tokens=len(item.tokens), finish_reason=item.finish_reason, answer=problem.answer,
                        dataset=plugin_name, seconds=item.seconds, question=problem.question,
                        total_wall_seconds=total_wall_seconds)


def _summary(recipe: Any, settings: dict[str, Any], dtype: torch.dtype, out_dir: Path, problems: list[Any],
             merged: dict[str, Any], env: DistEnv, previous: dict[str, Any], accounted: float) -> dict[str, Any]:
    """``run.json``: settings, hardware, timings of this invocation and per-problem seconds of all samples
    (``previous``: the ``run.json`` there before, a marker or an earlier summary; ``accounted``: the run's
    generation seconds on record before this invocation, :func:`accounted_wall_seconds`)."""
    gen = recipe.generate
    records = list(read_done(out_dir).values())
    earlier = previous.get("previous_summary", previous)  # the last summary, under a marker if one was written
    counts: dict[str, int] = {}
    for rec in records:
        counts[str(rec["problem_id"])] = counts.get(str(rec["problem_id"]), 0) + 1
    complete = all(counts.get(p.id, 0) >= gen.n_samples for p in problems)
    label = previous.get("label", earlier.get("label"))
    return {
        "status": "complete" if complete else "partial",
        "settings": settings,
        "model": settings["model"],
        "student": merged["student"] if merged["student"] is not None else earlier.get("student", ""),
        "dataset": gen.data.dataset,
        "split": gen.data.split,
        "device": merged["devices"][0],
        "devices": merged["devices"],
        "world_size": env.world_size,
        "dtype": str(dtype).removeprefix("torch."),
        "state_dtype": gen.state_dtype,
        "batch_size": gen.batch_size,
        "check_every": gen.check_every,
        "prefill_bucket": gen.prefill_bucket,
        "overlap_prefill": gen.overlap_prefill,
        "cuda_graphs": merged["cuda_graph"],
        "graph_error": merged["graph_error"],
        "compiled": merged["compiled"],
        "compile_seconds": merged["compile_seconds"],
        "compile_error": merged["compile_error"],
        "prefill_compile_errors": merged["prefill_compile_errors"],
        "engine": merged["engine"],
        "n_samples": gen.n_samples,
        "num_problems": len(problems),
        "num_samples": len(records),
        "generated_tokens": sum(int(r.get("num_tokens", 0)) for r in records),
        "wall_seconds": merged["wall_seconds"],
        "total_wall_seconds": accounted + merged["wall_seconds"],
        "new_samples": merged["new_samples"],
        "new_tokens": merged["generated_tokens"],
        "tokens_per_second": merged["tokens_per_second"],
        "problem_seconds": problem_seconds(records),
        "torch": torch.__version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # a label written into run.json by hand names the run in evaluate's tables: an extension keeps it
        **({"label": label} if label is not None else {}),
    }
