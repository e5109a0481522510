"""Reading records (one JSON object each) from local ``.jsonl``, ``.json`` and ``.parquet`` files.

``data.path`` may name a file (read whatever the split) or a directory, in which case the files
whose name carries the split as a separate word are read in name order: for split ``train``,
``train.jsonl``, ``gsm8k_train.jsonl`` and ``main/train-00000-of-00001.parquet`` (the layout of a
downloaded hub dataset) all match, ``train_1M-00000.parquet`` does not.

Every record comes with its location (``file:line`` for JSON lines, ``file: record N`` for a
JSON array, ``file: row N`` for parquet) so that errors can point at it.

:func:`iter_jsonl_objects` also reads the JSON-lines files thinkfast appends to itself (``samples.jsonl``,
``metrics.jsonl``): there a last line cut short by a killed writer is expected and left out, and
:func:`repair_cut_end` makes such a file safe to append to again.
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


def iter_jsonl_objects(path: Path, on_cut_end: Callable[[str], None] | None = None, fix: str = ""
                       ) -> Iterator[tuple[str, dict[str, Any]]]:
    """``("file:line", object)`` for every non-blank line of a JSON-lines file, read as bytes one line at a time.

    A byte-order mark at the start of any line is dropped (also files joined by ``cat``); a line that is not
    UTF-8, not valid JSON or not a JSON object is a :class:`DataError` naming the file and line and ``fix``
    (by default, for a file the user gave us: save it as UTF-8, one JSON object per line).

    ``on_cut_end(where)``: for a file thinkfast appends to, where a killed writer can leave the last line
    unfinished. When given, a last line that has no newline and is not complete JSON (:func:`_is_cut_line`)
    is passed to it and skipped; a last line that is complete JSON without its newline is read like any
    other. :func:`repair_cut_end` makes such a file safe to append to again.
    """
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            if on_cut_end is not None and _is_cut_line(raw):
                on_cut_end(where)
                return
            line = decode_utf8(raw.removeprefix(BOM), where, fix or "save the file as UTF-8")
            if not line.strip():
                continue
            try:
                record = json.loads(line.rstrip("\r\n"))  # without the newline an error's column is on this line
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); "
                                f"{fix or 'each line must be one JSON object'}") from None
            if not isinstance(record, dict):
                raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}; "
                                f"{fix or 'each line must be one JSON object'}")
            yield where, record


def _is_cut_line(raw: bytes) -> bool:
    """Whether ``raw`` (one line as read, newline included) is a line a killed writer left unfinished: no
    newline, and not complete JSON (or not even UTF-8: the cut split a character). A writer appends
    ``json.dumps(obj) + "\\n"``, so an unfinished object never parses, and a complete one lacks only the newline."""
    if raw.endswith(b"\n"):
        return False
    try:
        json.loads(raw.removeprefix(BOM).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return True
    return False


def repair_cut_end(path: Path) -> None:
    """Make a JSON-lines file safe to append to after its writer was killed mid-line: an unfinished last line
    (:func:`_is_cut_line`) is truncated away, a complete last line without its newline gets one. Without this,
    the next appended line would be glued onto the last one. A missing file is left missing. Reads only the
    file's last line, from the end, whatever the file's size."""
    if not path.exists():
        return
    with path.open("r+b") as fh:
        size = fh.seek(0, 2)
        start = _last_line_start(fh, size)
        if start == size:
            return
        fh.seek(start)
        if _is_cut_line(fh.read()):
            fh.truncate(start)
        else:
            fh.write(b"\n")  # the read left the position at the end


def _last_line_start(fh: Any, size: int, block: int = 1 << 16) -> int:
    """Offset just after the last newline of the ``size``-byte binary file ``fh`` (0 if it has none), found by
    reading ``block``-byte pieces backwards from the end."""
    end = size
    while end > 0:
        begin = max(end - block, 0)
        fh.seek(begin)
        newline = fh.read(end - begin).rfind(b"\n")
        if newline >= 0:
            return begin + newline + 1
        end = begin
    return 0


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
