"""The files ``generate`` writes: ``samples.jsonl``, ``run.json``, and resuming from them.

``samples.jsonl`` gets one JSON object per finished sample, appended and flushed as soon as the
sample ends, so an interrupted run loses at most the samples still in flight. Under
``torchrun`` each rank appends to ``samples.rank<R>.jsonl`` and rank 0 merges every file into
``samples.jsonl`` at the end. A re-run with the same output directory reads all of these,
skips every ``(problem_id, sample_index)`` already present and generates only the rest;
because sampling noise is keyed by (seed, problem, sample, token index), the result equals
an uninterrupted run. ``run.json`` records the settings at the start (a re-run with other
settings is refused) and the timings at the end; while samples are being added it says status
``running`` (:func:`mark_running`), so a run interrupted while extending a finished one is not
mistaken for the finished one.

Wall time across invocations: every sample carries ``total_wall_seconds``, the run's generation
time (all invocations) when it was written, so the time of an invocation that was killed before
writing its summary survives up to its last finished sample. A re-run starts its clock from
:func:`accounted_wall_seconds` (the most that ``run.json`` or any sample recorded), and its
summary's ``total_wall_seconds`` is that plus its own ``wall_seconds``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from thinkfast.data.files import iter_jsonl_objects, repair_cut_end
from thinkfast.errors import DataError, ThinkfastError

SAMPLES = "samples.jsonl"
RUN = "run.json"


@dataclass
class SampleRecord:
    """One line of ``samples.jsonl``.

    ``num_tokens`` counts generated tokens including a final EOS token; ``seconds`` is the
    wall time attributed to this sample: every engine cycle (prefills of new work, then
    ``check_every`` decode steps, then the host check) is split equally among the slots busy in
    it. ``question`` is the problem's text (for reward models). ``total_wall_seconds`` is the run's
    generation wall time, every invocation included, when this sample was written (:class:`RunClock`).
    """

    problem_id: str
    sample_index: int
    text: str
    num_tokens: int
    finish_reason: str  # "eos" | "stop" | "answer" | "length"
    answer: str = ""
    dataset: str = ""
    seconds: float = 0.0
    question: str = ""
    total_wall_seconds: float = 0.0


@dataclass
class RunClock:
    """The wall clock of one invocation, and of the run across invocations (seconds).

    ``before``: the run's generation time accounted for by earlier invocations
    (:func:`accounted_wall_seconds`); the invocation's own time runs from ``started``.
    """

    before: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        """Seconds since this invocation's clock started."""
        return time.perf_counter() - self.started

    def total(self) -> float:
        """The run's generation seconds so far: earlier invocations' plus this one's."""
        return self.before + self.elapsed()


def accounted_wall_seconds(run_json: dict[str, Any], records: Iterable[dict[str, Any]]) -> float:
    """The run's generation seconds that earlier invocations left on record: the largest
    ``total_wall_seconds`` of ``run.json`` (``run_json``: a summary or a marker) and of the samples
    (``records``; an invocation killed before its summary left its time only there). Samples written
    before samples carried it count through ``run.json`` alone."""
    recorded = [run_json.get("total_wall_seconds"), *(rec.get("total_wall_seconds") for rec in records)]
    return max([0.0, *(float(t) for t in recorded
                       if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t))])


def shard_name(rank: int) -> str:
    return f"samples.rank{rank}.jsonl"


#: What to do about a damaged line of a samples file.
_FIX = "delete the line or use another --output-dir"


def _read_samples(path: Path) -> list[dict[str, Any]]:
    """Records of one samples file; a last line cut short by a killed run is left out (its sample is generated
    again). A damaged line before it is a :class:`DataError` naming the file and line."""
    if not path.exists():
        return []
    return [_checked_sample(record, where)
            for where, record in iter_jsonl_objects(path, on_cut_end=lambda where: None, fix=_FIX)]


def _checked_sample(record: dict[str, Any], where: str) -> dict[str, Any]:
    """``record`` if it can name a sample (it has ``problem_id`` and an integer ``sample_index``), else a
    :class:`DataError` naming ``where``."""
    if "problem_id" not in record or "sample_index" not in record:
        problem = "a sample needs problem_id and sample_index"
    elif not isinstance(record["sample_index"], int) or isinstance(record["sample_index"], bool):
        problem = f"sample_index {record['sample_index']!r} is not an integer"
    else:
        return record
    raise DataError(f"{where}: {problem}; {_FIX}")


def shard_files(out_dir: Path) -> list[Path]:
    """The per-rank shard files in ``out_dir``: ranks of a ``torchrun`` job that was stopped before rank 0 merged
    them into ``samples.jsonl`` (a finished job leaves none)."""
    return sorted(out_dir.glob("samples.rank*.jsonl"))


def sample_files(out_dir: Path) -> list[Path]:
    """``samples.jsonl`` plus any per-rank shard files, merged first."""
    return [out_dir / SAMPLES, *shard_files(out_dir)]


def read_done(out_dir: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Every sample already written in ``out_dir``, keyed by ``(problem_id, sample_index)``."""
    done: dict[tuple[str, int], dict[str, Any]] = {}
    for path in sample_files(out_dir):
        for rec in _read_samples(path):
            done.setdefault((str(rec["problem_id"]), int(rec["sample_index"])), rec)
    return done


class SampleWriter:
    """Appends records to one samples file, flushing after every write."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_cut_end(path)  # so that the first record is not glued onto a line a killed run left unfinished
        self.path = path
        self._fh = path.open("a", encoding="utf-8")

    def write(self, record: SampleRecord) -> None:
        self._fh.write(json.dumps(asdict(record), ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> SampleWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def merge_samples(out_dir: Path, problem_order: Iterable[str]) -> int:
    """Rewrite ``samples.jsonl`` as the union of all sample files, ordered by problem then sample index.

    Shard files are removed after the merged file is in place (written to a temporary file and
    renamed, so a crash never leaves a half-written ``samples.jsonl``). Returns the record count.
    """
    done = read_done(out_dir)
    rank = {pid: i for i, pid in enumerate(problem_order)}
    keys = sorted(done, key=lambda k: (rank.get(k[0], len(rank)), k[0], k[1]))
    tmp = out_dir / (SAMPLES + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for key in keys:
            fh.write(json.dumps(done[key], ensure_ascii=False) + "\n")
    os.replace(tmp, out_dir / SAMPLES)
    for shard in shard_files(out_dir):
        shard.unlink()
    return len(keys)


def problem_seconds(records: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Generation seconds per problem: the sum of its samples' attributed seconds."""
    out: dict[str, float] = {}
    for rec in records:
        pid = str(rec["problem_id"])
        out[pid] = out.get(pid, 0.0) + float(rec.get("seconds", 0.0))
    return out


# settings added to run.json after it was first written, with the value that reproduces what the code did before
# them: a run.json without such a key was written by that code, so it compares as that value
EARLIER_SETTINGS: dict[str, Any] = {"stop_on_special_tokens": False, "stop_at_answer": False, "few_shot_examples": []}


def check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume into ``out_dir`` if its ``run.json`` was written with other settings.

    A key of :data:`EARLIER_SETTINGS` missing from an older ``run.json`` counts as its earlier value.
    """
    path = out_dir / RUN
    if not path.exists():
        return
    try:
        previous = json.loads(path.read_text()).get("settings", {})
    except json.JSONDecodeError:
        return
    previous = {**{k: v for k, v in EARLIER_SETTINGS.items() if k in settings}, **previous}
    changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
    if changed:
        details = ", ".join(f"{k}: {previous.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        # e.g. a run made with --data-path FILE and no --split before such a run took its split from the file name
        hint = f"; pass --split {previous['split']} to continue it" if changed == ["split"] else ""
        if changed == ["few_shot_examples"]:
            hint = ("; the worked examples shown in every prompt would differ: the data they come from changed, "
                    "or the run was made before thinkfast recorded them")
        raise ThinkfastError(
            f"{path}: this output directory holds samples generated with other settings ({details}){hint}; "
            f"use another --output-dir, or delete {out_dir} to start over"
        )


def read_run_json(out_dir: Path) -> dict[str, Any]:
    """``out_dir``'s ``run.json``, or ``{}`` if there is none or it is not a JSON object."""
    try:
        data = json.loads((out_dir / RUN).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def mark_running(out_dir: Path, settings: dict[str, Any], work_left: bool) -> None:
    """Before generating: ``run.json`` says status ``running`` until the summary replaces it.

    A new run directory always gets the marker. A finished run (``complete`` or ``partial``) that is
    being extended (``work_left``: some asked-for sample is missing) gets it too, with the earlier
    summary kept whole under ``previous_summary`` and its ``total_wall_seconds`` carried over, so that
    an interruption leaves no summary claiming problems and seconds the samples no longer match;
    ``evaluate`` then warns and sums seconds from the samples. Nothing is rewritten when there is no work
    left or the file is already a marker.
    """
    previous = read_run_json(out_dir)
    if previous and (not work_left or previous.get("status") == "running"):
        return
    marker: dict[str, Any] = {"status": "running", "settings": settings}
    if previous:
        marker["total_wall_seconds"] = float(previous.get("total_wall_seconds", 0.0))
        # what names the run in evaluate's tables stays what it was
        marker.update({key: previous[key] for key in ("model", "student", "label") if key in previous})
        marker["previous_summary"] = previous
    write_json(out_dir / RUN, marker)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically (temporary file + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
