"""Problems, dataset plugins, prompt rendering, tokenisation and packing.

- :mod:`thinkfast.data.base`: :class:`Problem` and the :class:`DatasetPlugin` base class.
- :mod:`thinkfast.data.answers`: final-answer extraction and normalisation per answer format.
- :mod:`thinkfast.data.render`: prompts (chat template or plain) and training examples with loss masks.
- :mod:`thinkfast.data.packing`: packing examples into fixed-length rows with document ids.
- :mod:`thinkfast.data.files` / :mod:`thinkfast.data.sources`: reading local files and hub datasets.

Core code reaches dataset plugins only through the registry and only through a guard
(:mod:`thinkfast.data.guard`); :func:`load_problems` is the one entry point the subcommands need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from thinkfast.data.base import DatasetPlugin, Problem
from thinkfast.data.guard import GuardedDataset
from thinkfast.errors import DataError

if TYPE_CHECKING:
    from thinkfast.config.common import DataSpec

__all__ = ["DatasetPlugin", "GuardedDataset", "Problem", "get_plugin", "load_problems", "no_problems_error"]


def get_plugin(spec: DataSpec | str, options: Any = None) -> GuardedDataset:
    """The dataset plugin ``spec.dataset`` (or the one named ``spec``), instantiated with ``spec.options`` (or
    ``options``) and guarded: every call the core makes into it is checked (:mod:`thinkfast.data.guard`)."""
    from thinkfast.registry import get_registry

    name, options = (spec, options) if isinstance(spec, str) else (spec.dataset, spec.options)
    return GuardedDataset.create(get_registry().entry("datasets", name), options)


def load_problems(spec: DataSpec) -> tuple[GuardedDataset, list[Problem]]:
    """The plugin named by ``spec`` (guarded) and the problems it selects (path, split, offset, limit)."""
    plugin = get_plugin(spec)
    return plugin, plugin.load(spec)


def no_problems_error(key: str, spec: DataSpec) -> DataError:
    """The error for a data table (recipe key ``key``) that selects no problem: what was read, and what to fix."""
    from thinkfast.data.files import iter_records

    fix = "check those keys"
    if spec.path:
        try:
            empty = next(iter_records(spec.path, spec.split), None) is None
        except DataError:
            empty = False
        if empty:
            fix = f"{spec.path} has no records; point {key}.path at a file with one JSON object per line"
    return DataError(f"{key}: no problems in dataset {spec.dataset!r} (path {spec.path or 'default'!r}, split "
                     f"{spec.split!r}, offset {spec.offset}, limit {spec.limit}); {fix}")
