"""``ModelConfig``: the shape of a :class:`~thinkfast.models.model.ThinkfastLM`, stored as ``config.json``."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from thinkfast.errors import ModelLoadError

MIXER_KINDS = ("attention", "ssm")
CONFIG_FORMAT = "thinkfast"


@dataclass
class SSMConfig:
    """Shape of every SSM (Mamba-2 / SSD, multi-head) mixer of a model.

    The in-projection produces ``x`` at ``num_x_heads * head_dim``, ``B`` at ``num_b_groups * state_size``,
    ``C`` at ``num_c_groups * state_size`` (each then repeated GQA-style to ``num_heads``), one ``dt``
    per head and, with ``gate``, ``z`` at ``num_heads * head_dim``.
    """

    num_heads: int
    head_dim: int
    state_size: int
    num_x_heads: int
    num_b_groups: int
    num_c_groups: int
    conv_kernel: int = 4  # taps of the causal depthwise conv over [x, B, C]; 0 = no conv
    conv_bias: bool = True
    activation: str = "silu"  # after the conv (or the projection when there is no conv): 'silu' | 'identity'
    gate: bool = False  # multiply by silu(z) (with `norm`: gated RMSNorm, as Mamba-2)
    norm: bool = False  # RMSNorm over the heads' output before out_proj
    chunk_size: int = 128  # tokens per chunk of the SSD scan
    proj_bias: bool = False

    @property
    def inner_size(self) -> int:
        """``num_heads * head_dim``: width of the scan's output."""
        return self.num_heads * self.head_dim

    @property
    def conv_dim(self) -> int:
        """Channels of the conv: ``[x, B, C]`` at their un-repeated sizes."""
        return self.num_x_heads * self.head_dim + (self.num_b_groups + self.num_c_groups) * self.state_size

    def check(self) -> list[str]:
        problems = []
        for key in ("num_x_heads", "num_b_groups", "num_c_groups"):
            value = getattr(self, key)
            if value <= 0 or self.num_heads % value:
                problems.append(f"ssm.{key} = {value} must divide ssm.num_heads = {self.num_heads}")
        if self.activation not in ("silu", "identity"):
            problems.append(f"ssm.activation = {self.activation!r} must be 'silu' or 'identity'")
        for key in ("num_heads", "head_dim", "state_size", "chunk_size"):
            if getattr(self, key) <= 0:
                problems.append(f"ssm.{key} must be positive")
        if self.conv_kernel < 0:
            problems.append("ssm.conv_kernel must be >= 0")
        return problems


@dataclass
class ModelConfig:
    """Everything needed to build a :class:`ThinkfastLM` (saved as ``config.json``).

    Widths are in features, ``rope_theta`` in radians' base, ``max_position_embeddings`` in tokens.
    ``rope_scaling`` is Hugging Face's dict (``{"rope_type": "llama3", "factor": ..., ...}``) or ``None``.
    ``mixers[i]`` is ``"attention"`` or ``"ssm"``; ``ssm`` must be set when any mixer is ``"ssm"``.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    max_position_embeddings: int = 2048
    tie_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    mixers: list[str] = field(default_factory=list)
    ssm: SSMConfig | None = None
    student: str = "transformer"
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.mixers:
            self.mixers = ["attention"] * self.num_layers
        if isinstance(self.ssm, dict):
            self.ssm = SSMConfig(**self.ssm)
        problems = self.check()
        if problems:
            raise ModelLoadError("invalid model config: " + "; ".join(problems))

    def check(self) -> list[str]:
        problems = []
        if len(self.mixers) != self.num_layers:
            problems.append(f"mixers has {len(self.mixers)} entries for num_layers = {self.num_layers}")
        bad = sorted({m for m in self.mixers if m not in MIXER_KINDS})
        if bad:
            problems.append(f"mixers holds {bad}; each must be one of {MIXER_KINDS}")
        if self.num_heads % self.num_kv_heads:
            problems.append(f"num_kv_heads = {self.num_kv_heads} must divide num_heads = {self.num_heads}")
        if "ssm" in self.mixers:
            if self.ssm is None:
                problems.append("mixers holds 'ssm' but the 'ssm' settings are missing")
            else:
                problems.extend(self.ssm.check())
        return problems

    @property
    def attention_layers(self) -> list[int]:
        """Indices of the layers whose mixer is attention."""
        return [i for i, m in enumerate(self.mixers) if m == "attention"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``config.json``), with a ``format`` marker."""
        return {"format": CONFIG_FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config.json") -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise :class:`ModelLoadError` naming ``source``."""
        data = {k: v for k, v in data.items() if k != "format"}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ModelLoadError(f"{source}: unknown keys {unknown}; is this a thinkfast model directory?")
        ssm = data.get("ssm")
        if isinstance(ssm, dict):
            ssm_names = {f.name for f in dataclasses.fields(SSMConfig)}
            if set(ssm) - ssm_names:
                raise ModelLoadError(f"{source}: unknown keys in 'ssm': {sorted(set(ssm) - ssm_names)}")
            data["ssm"] = SSMConfig(**ssm)
        try:
            return cls(**data)
        except TypeError as exc:
            raise ModelLoadError(f"{source}: {exc}") from None

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)
