"""The recipe: one TOML file, one dataclass per section, assembled here.

Shared sections live in :mod:`thinkfast.config.common`; each subcommand's own section lives
beside its engine (``thinkfast/<subcommand>/config.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from thinkfast.config.common import KernelsSection, ModelSpec, RunSection, StudentSection
from thinkfast.config.fields import option
from thinkfast.config.validate import OverrideSpan
from thinkfast.distill.config import DistillSection
from thinkfast.evaluate.config import EvaluateSection
from thinkfast.generate.config import GenerateSection
from thinkfast.profile.config import ProfileSection


@dataclass
class Recipe:
    """A whole recipe. Only the sections a subcommand uses need to be present."""

    include: list[str] = option([], "Base recipes (paths relative to this file) merged under this one, in order.")
    run: RunSection = option(default_factory=RunSection, help="Shared run settings.")
    teacher: ModelSpec = option(default_factory=ModelSpec, help="The teacher model.")
    student: StudentSection = option(default_factory=StudentSection, help="The student to build.")
    kernels: KernelsSection = option(default_factory=KernelsSection, help="Kernel selection.")
    distill: DistillSection = option(default_factory=DistillSection, help="`thinkfast distill` stages.")
    generate: GenerateSection = option(default_factory=GenerateSection, help="`thinkfast generate` settings.")
    evaluate: EvaluateSection = option(default_factory=EvaluateSection, help="`thinkfast evaluate` settings.")
    profile: ProfileSection = option(default_factory=ProfileSection, help="`thinkfast profile` settings.")

    #: The file the recipe came from (set by the loader; not a recipe key).
    source: ClassVar[str] = "<defaults>"
    #: The key paths that ``--set`` items set (by the loader): problems found there later name the item.
    override_spans: ClassVar[tuple[OverrideSpan, ...]] = ()
