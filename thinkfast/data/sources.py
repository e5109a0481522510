"""A base for dataset plugins that read records from the Hugging Face hub or a local path.

:class:`RecordDatasetPlugin` reads ``data.path`` when it is set (``.jsonl``, ``.json``,
``.parquet`` file or directory, see :mod:`thinkfast.data.files`) and otherwise loads the hub
dataset named by its options (``hub_id``, ``hub_config``, ``revision``) with
``datasets.load_dataset``. Subclasses turn one record into a :class:`Problem` in
:meth:`RecordDatasetPlugin.to_problem`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from thinkfast.config.fields import option
from thinkfast.data.base import DatasetPlugin, Problem
from thinkfast.data.files import iter_records
from thinkfast.errors import DataError

if TYPE_CHECKING:
    from thinkfast.config.common import DataSpec


@dataclass
class HubOptions:
    """Where a hub-backed dataset comes from when ``data.path`` is empty."""

    hub_id: str = option("", "Hugging Face hub dataset id, used when data.path is empty.")
    hub_config: str = option("", "Hub dataset configuration (subset) name; empty for the default.")
    revision: str = option("", "Hub revision (branch, tag or commit); empty for the default branch.")
    streaming: bool = option(False, "Stream the hub dataset instead of downloading it all first.")


def hub_records(hub_id: str, config: str, split: str, revision: str = "",
                streaming: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(location, record)`` for every row of a hub dataset split, via ``datasets.load_dataset``.

    Any failure (offline, unknown id, missing split) becomes a :class:`DataError` that tells the
    user to download the data and pass ``data.path``.
    """
    import datasets

    label = f"{hub_id}" + (f" ({config})" if config else "")
    try:
        rows: Iterable[dict[str, Any]] = datasets.load_dataset(
            hub_id, config or None, split=split, revision=revision or None, streaming=streaming
        )
    except Exception as exc:  # datasets raises many types: ConnectionError, FileNotFoundError, ValueError...
        raise DataError(
            f"could not load hub dataset {label} split {split!r}: {type(exc).__name__}: {exc}. Without hub "
            f"access, download the dataset elsewhere and set data.path to its .jsonl/.json/.parquet file or "
            f"directory"
        ) from None
    for i, row in enumerate(rows):
        yield f"{label} {split} row {i}", dict(row)


class RecordDatasetPlugin(DatasetPlugin):
    """A dataset plugin over records from a local path or the hub (``Options`` extends :class:`HubOptions`)."""

    Options = HubOptions
    #: Prefix of problem ids: ``<prefix>-<split>-<index>`` unless the records carry their own ids.
    id_prefix = "problem"

    def records(self, spec: DataSpec) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(location, record)`` pairs of ``spec.split``: from ``spec.path`` if set, else from the hub."""
        if spec.path:
            return iter_records(spec.path, spec.split)
        if not getattr(self.options, "hub_id", ""):
            raise DataError(f"dataset {self.id_prefix!r} has no hub source: set data.path to a local file")
        opts = self.options
        return hub_records(opts.hub_id, opts.hub_config, spec.split, opts.revision, opts.streaming)

    def problem_id(self, spec: DataSpec, index: int) -> str:
        """The id of the ``index``-th record of ``spec.split`` (0-based, before ``offset``)."""
        return f"{self.id_prefix}-{spec.split}-{index}"

    def to_problem(self, record: dict[str, Any], index: int, where: str, spec: DataSpec) -> Problem:
        """One record as a :class:`Problem`; :class:`DataError` naming ``where`` when it is malformed."""
        raise NotImplementedError

    def read(self, spec: DataSpec) -> Iterator[Problem]:
        for index, (where, record) in enumerate(self.records(spec)):
            yield self.to_problem(record, index, where, spec)
