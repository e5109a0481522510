"""The ``[evaluate]`` recipe section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from thinkfast.config.fields import option


@dataclass
class AggregatorSpec:
    """One aggregator plugin and its options."""

    plugin_family: ClassVar[str] = "aggregators"
    plugin_field: ClassVar[str] = "name"

    name: str = option("majority", "Aggregator plugin name.", plugin="aggregators")
    options: dict[str, Any] = option({}, "Options of the aggregator plugin.")


@dataclass
class EvaluateSection:
    """Grading samples and measuring accuracy against samples and seconds."""

    runs: list[str] = option([], "Generation output directories to evaluate (one line per model in plots).")
    aggregators: list[AggregatorSpec] = option(
        default_factory=lambda: [AggregatorSpec()], help="Aggregators to score (`[[evaluate.aggregators]]`).")
    subsets: int = option(100, "Random k-subsets averaged per k.", min=1)
    bootstrap: int = option(1000, "Bootstrap resamples for confidence intervals.", min=0)
    grading_timeout: float = option(5.0, "Seconds one equivalence check may take before it counts as wrong.",
                                    unit="s", min=0.1)
    workers: int = option(2, "Grading processes.", min=1)
