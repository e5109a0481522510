"""Reading records (one JSON object each) from local ``.jsonl``, ``.json`` and ``.parquet`` files.

``data.path`` may name a file (read whatever the split) or a directory, in which case the files
whose name carries the split as a separate word are read in name order: for split ``train``,
``train.jsonl``, ``gsm8k_train.jsonl`` and ``main/train-00000-of-00001.parquet`` (the layout of a
downloaded hub dataset) all match, ``train_1M-00000.parquet`` does not.

Every record comes with its location (``file:line`` for JSON lines, ``file: record N`` for a
JSON array, ``file: row N`` for parquet) so that errors can point at it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from thinkfast.errors import DataError

SUFFIXES = (".jsonl", ".json", ".parquet")


def _matches_split(path: Path, split: str) -> bool:
    return re.search(rf"(^|[-_./]){re.escape(split)}($|[-.])", path.name[: -len(path.suffix)]) is not None


#: The UTF-8 byte-order mark that some editors put at the start of a file (read files drop it).
BOM = b"\xef\xbb\xbf"

#: Split names that :func:`split_of_file` recognises in a file name.
SPLIT_WORDS = ("train", "test", "validation", "dev", "val")


def split_of_file(path: str | Path) -> str | None:
    """The split a data file's name stands for: the one word of :data:`SPLIT_WORDS` it carries as a
    separate word (``gsm8k_train.jsonl``, ``train-00000-of-00001.parquet``: ``train``), else its stem
    (``problems.jsonl``: ``problems``). None when ``path`` is not a file (a directory is searched by split)."""
    p = Path(path).expanduser()
    if not p.is_file():
        return None
    named = [word for word in SPLIT_WORDS if _matches_split(p, word)]
    return named[0] if len(named) == 1 else p.stem


def resolve_files(path: str | Path, split: str) -> list[Path]:
    """The files to read for ``split`` under ``path`` (a file, or a directory searched recursively)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data.path: {p} does not exist; point it at a .jsonl, .json or .parquet file or a "
                        f"directory of them")
    if p.is_file():
        if p.suffix not in SUFFIXES:
            raise DataError(f"data.path: {p} is not a .jsonl, .json or .parquet file")
        return [p]
    candidates = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in SUFFIXES)
    chosen = [f for f in candidates if _matches_split(f, split)]
    if not chosen:
        found = ", ".join(str(f.relative_to(p)) for f in candidates[:10]) or "no .jsonl/.json/.parquet files"
        raise DataError(f"data.path: {p} has no file for split {split!r} (found: {found}); name the file "
                        f"directly in data.path or set data.split")
    return chosen


def iter_jsonl_objects(path: Path, on_cut_end: Callable[[str], None] | None = None
                       ) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("file:line", object)`` for every non-blank line of a JSONL file; a line that is not a JSON
    object is a :class:`DataError` naming the file and line.

    ``on_cut_end(where)``: when given, a last line that is not valid JSON (or not even UTF-8: the cut split
    a character) and has no newline (a writer killed mid-line) is passed to it and skipped instead.
    """
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            cut = on_cut_end is not None and not raw.endswith(b"\n")
            try:
                line = decode_utf8(raw.removeprefix(BOM), where)  # a BOM on any line: also files joined by cat
            except DataError:
                if cut:
                    on_cut_end(where)
                    return
                raise
            if not line.strip():
                continue
            try:
                record = json.loads(line.rstrip("\r\n"))  # without the newline an error's column is on this line
            except json.JSONDecodeError as exc:
                if cut:
                    on_cut_end(where)
                    return
                raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be "
                                f"one JSON object") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield where, record


def decode_utf8(raw: bytes, where: str, fix: str = "save the file as UTF-8") -> str:
    """UTF-8 text; anything else is a :class:`DataError` naming ``where``, the first bad byte and ``fix``."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); {fix}") from None


def _json_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    raw = path.read_bytes()
    try:
        data = json.loads(decode_utf8(raw.removeprefix(BOM), str(path)))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of objects (or {{\"data\": [...]}}); "
                        f"for one object per line use a .jsonl file")
    for i, record in enumerate(data):
        if not isinstance(record, dict):
            raise DataError(f"{path}: record {i}: expected a JSON object, got {type(record).__name__}")
        yield f"{path}: record {i}", record


def _parquet_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    row = 0
    for batch in reader.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            yield f"{path}: row {row}", record
            row += 1


def iter_file(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(location, record)`` for every record of one file."""
    if path.suffix == ".jsonl":
        return iter_jsonl_objects(path)
    if path.suffix == ".json":
        return _json_records(path)
    return _parquet_records(path)


def iter_records(path: str | Path, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(location, record)`` for every record of ``split`` under ``path``, files in name order."""
    for file in resolve_files(path, split):
        yield from iter_file(file)


def field(record: dict[str, Any], key: str, where: str, option: str = "") -> str:
    """``record[key]`` as a string; a :class:`DataError` naming the location when it is missing or empty."""
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        hint = f"; set data.options.{option} to the field that holds it" if option else ""
        present = ", ".join(sorted(record)) or "none"
        problem = "empty" if key in record else "missing"
        raise DataError(f"{where}: {problem} field {key!r} (fields present: {present}){hint}")
    if isinstance(value, (dict, list)):
        raise DataError(f"{where}: field {key!r} must be a string or number, got {type(value).__name__}")
    return str(value)
