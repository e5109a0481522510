"""The ``[evaluate]`` recipe section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from thinkfast.config.fields import option
from thinkfast.plotting import FIGURE_WIDTH_HELP, check_figure_width


@dataclass
class AggregatorSpec:
    """One aggregator plugin and its options."""

    plugin_family: ClassVar[str] = "aggregators"
    plugin_field: ClassVar[str] = "name"

    name: str = option("majority", "Aggregator plugin name.", plugin="aggregators")
    label: str = option("", "Name in the report and plots; empty means the plugin name.")
    options: dict[str, Any] = option({}, "Options of the aggregator plugin.")

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass
class EvaluateSection:
    """Grading samples and measuring accuracy against samples and seconds."""

    runs: list[str] = option([], "Generation output directories to evaluate (one line per model in plots). "
                             "`--runs` on the command line replaces this list.")
    aggregators: list[AggregatorSpec] = option(
        default_factory=lambda: [AggregatorSpec()], help="Aggregators to score (`[[evaluate.aggregators]]`).")
    dataset: str = option("", "Dataset plugin whose answer format grades every sample; empty means the "
                          "`dataset` field of each sample.", plugin="datasets")
    common_problems: bool = option(False, "Evaluate every run on the problems that all runs completed (each "
                                   "with its run's n samples): interrupted or partial runs compared on equal "
                                   "problems. The report's warnings say how many each run lost.")
    subsets: int = option(100, "Random k-subsets averaged per problem and k; where a problem has no more k-subsets "
                          "than this, every one, each repeated so that random ties average out.", min=1)
    bootstrap: int = option(1000, "Bootstrap resamples (over problems) for confidence intervals; 0: none.", min=0)
    confidence: float = option(0.95, "Confidence level of the intervals.", min=0.5, max=0.999)
    grading_timeout: float = option(5.0, "Seconds one equivalence check may take before it counts as wrong.",
                                    unit="s", min=0.1)
    workers: int = option(2, "Grading processes.", min=1)
    plots: bool = option(True, "Write the plots next to report.json, each as a PNG and a PDF.")
    figure_width: float = option(0.0, FIGURE_WIDTH_HELP, unit="in", min=0.0)

    def check(self) -> list[tuple[str, str]]:
        labels = [a.display for a in self.aggregators if a is not None]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        problems = []
        if dupes:
            problems.append(("aggregators", f"two aggregators are called {', '.join(dupes)}; give each a distinct "
                                            f"`label`"))
        if (problem := check_figure_width(self.figure_width)) is not None:
            problems.append(("figure_width", problem))
        return problems
