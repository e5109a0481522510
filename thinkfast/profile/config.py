"""The ``[profile]`` recipe section."""

from __future__ import annotations

from dataclasses import dataclass

from thinkfast.config.fields import option


@dataclass
class ProfileSection:
    """Throughput and memory over a batch x length grid."""

    models: list[str] = option(["llama-3.2-1b", "llamba-1b"], "Built-in shapes, model directories or recipes.")
    batch: list[int] = option([1, 64], "Batch sizes.")
    seqlen: list[int] = option([1024], "Total lengths (prompt + generated).", unit="tokens")
    repeats: int = option(5, "Timed repeats per cell (median reported).", min=1)
