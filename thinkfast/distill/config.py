"""The ``[distill]`` recipe section: an ordered list of training stages."""

from __future__ import annotations

from dataclasses import dataclass

from thinkfast.config.common import DataSpec
from thinkfast.config.fields import option

STAGE_KINDS = ("matrix", "hidden", "kd", "sft")
PARAM_GROUPS = ("mixers", "mlps", "norms", "embeddings", "lm_head", "all")
STRATEGIES = ("auto", "ddp", "fsdp")


@dataclass
class StageSection:
    """One training stage."""

    kind: str = option("kd", "Stage: 'matrix' (MOHAWK 1), 'hidden' (MOHAWK 2), 'kd' (logit distillation), 'sft'.",
                       choices=STAGE_KINDS)
    name: str = option("", "Label used in logs and checkpoint names; defaults to the kind.")
    data: DataSpec = option(default_factory=DataSpec, help="Training data for this stage.")
    steps: int = option(0, "Optimizer steps; 0 means derive from `tokens`.", min=0)
    tokens: int = option(0, "Token budget (used when `steps` is 0): steps = ceil(tokens / (seq_len x batch_size "
                         "x grad_accum x processes)).", unit="tokens", min=0)
    seq_len: int = option(512, "Packed sequence length.", unit="tokens", min=8)
    batch_size: int = option(8, "Sequences per micro-batch (per process).", min=1)
    grad_accum: int = option(1, "Micro-batches per optimizer step.", min=1)
    lr: float = option(1e-4, "Peak learning rate.", min=0.0)
    min_lr_ratio: float = option(0.0, "Learning rate 'cosine' and 'wsd' decay to, as a fraction of `lr` "
                                 "(reached just after the last step).", min=0.0, max=1.0)
    weight_decay: float = option(0.0, "AdamW weight decay.", min=0.0)
    betas: list[float] = option([0.9, 0.95], "AdamW (beta1, beta2).")
    warmup_steps: int = option(0, "Linear warm-up steps.", min=0)
    schedule: str = option("cosine", "LR schedule after warm-up.", choices=("cosine", "wsd", "constant"))
    decay_fraction: float = option(0.2, "For 'wsd': fraction of steps spent decaying.", min=0.0, max=1.0)
    max_grad_norm: float = option(1.0, "Gradient clipping norm; 0 disables.", min=0.0)
    train: list[str] = option(["all"], f"Parameter groups that train: {', '.join(PARAM_GROUPS)}.")
    layers: list[int] = option([], "Only these layer indices train (empty: all layers).")
    temperature: float = option(1.0, "kd: softmax temperature; the KL is multiplied by temperature^2.", min=0.0)
    kl_direction: str = option("forward", "kd: 'forward' KL(teacher||student) or 'reverse'.",
                               choices=("forward", "reverse"))
    ce_weight: float = option(0.0, "kd: weight of the cross-entropy term added to the KL.", min=0.0)
    loss_on: str = option("responses", "Tokens that carry the loss: 'responses' or 'all'.",
                          choices=("responses", "all"))
    hidden_target: str = option("block", "hidden: match the teacher's block output ('block') or its attention "
                                "output ('mixer').", choices=("block", "mixer"))
    vocab_chunk: int = option(8192, "kd/sft: vocabulary columns per chunk of the loss computation.",
                              unit="tokens", min=1)
    checkpoint_every: int = option(0, "Save a resumable checkpoint every N steps; 0: only at the end.", min=0)
    log_every: int = option(1, "Write a metrics line every N steps.", min=1)

    def check(self) -> list[tuple[str, str]]:
        problems = []
        if self.steps == 0 and self.tokens == 0:
            problems.append(("steps", "set `steps` or `tokens` (both are 0)"))
        for group in self.train:
            if group not in PARAM_GROUPS:
                problems.append(("train", f"{group!r} is not a parameter group ({', '.join(PARAM_GROUPS)})"))
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            problems.append(("betas", f"{self.betas!r} must be two numbers in [0, 1), e.g. [0.9, 0.95]"))
        if any(i < 0 for i in self.layers):
            problems.append(("layers", f"{self.layers!r}: layer indices start at 0"))
        return problems

    @property
    def label(self) -> str:
        return self.name or self.kind


@dataclass
class DistillSection:
    """Distillation: stages run in order; the final student is saved as a model directory."""

    stages: list[StageSection] = option([], "Stages, in order (`[[distill.stages]]` tables).")
    compile: bool = option(False, "torch.compile the student's forward.")
    activation_checkpointing: bool = option(False, "Recompute block activations in the backward pass.")
    strategy: str = option("auto", "Multi-process training under torchrun: 'ddp' (replicated student), 'fsdp' "
                           "(FSDP2, sharded per layer; kd/sft/hidden stages) or 'auto' (ddp).", choices=STRATEGIES)
    keep_checkpoints: int = option(2, "How many recent checkpoints to keep on disk.", min=1)
    progress: bool = option(True, "Show progress on rank 0: a bar in a terminal, a line every "
                             "THINKFAST_PROGRESS_SECONDS in a log (see the CLI reference).")
