"""``profile.json``: what a sweep measured, and where (schema ``thinkfast.profile/1``).

Top level::

    schema        "thinkfast.profile/1"
    created       ISO-8601 UTC time the sweep started
    device        {type, name, memory_bytes, bandwidth_bytes_per_s, bandwidth_source ("measured" | "given"),
                   peak_memory_source ("allocator" | "tensors")}
    dtype         compute dtype of every model ("bfloat16", ...)
    versions      {thinkfast, torch, python, cuda (null on CPU), and mamba_ssm / causal_conv1d / flash_attn
                   when installed}
    settings      the resolved [profile] section (with memory_cap_bytes)
    baseline      name of the model speedups are relative to
    models        [{name, source ("shape" | "directory" | "recipe"), spec, student, num_params,
                   weight_bytes, mixers {"attention": n, "ssm": n}, cache_fixed_bytes, cache_bytes_per_token,
                   kernels {operation: plugin}}]
    cells         one per model x grid cell, see :class:`CellResult`
"""

from __future__ import annotations

import dataclasses
import json
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import thinkfast
from thinkfast import strict_json

SCHEMA = "thinkfast.profile/1"
STATUSES = ("ok", "oom", "skipped")  # plus "planned" in a dry run, which writes no profile.json


@dataclass
class ModelInfo:
    """One profiled model."""

    name: str
    source: str
    spec: str
    student: str
    num_params: int
    weight_bytes: int
    mixers: dict[str, int]
    cache_fixed_bytes: int
    cache_bytes_per_token: int
    kernels: dict[str, str] = field(default_factory=dict)


@dataclass
class DecodePoint:
    """One timed decode step: every slot at ``position`` (0-based index of the token fed)."""

    position: int
    step_ms: float
    bytes_moved: int


@dataclass
class CellResult:
    """One model at one grid cell.

    ``status`` is ``"ok"``, ``"oom"`` (ran out of memory; ``reason`` has the error) or
    ``"skipped"`` (estimated above the memory limit; ``reason`` says by how much). Metrics are
    None unless ``status`` is ``"ok"``.

    - ``prefill_seconds``: one ``prompt_len``-token prompt prefilled into all ``batch`` slots
      (how ``generate`` starts n samples of one problem); ``prefill_tokens_per_s`` = prompt_len / that.
    - ``decode_step_ms``: one decode step for all slots, averaged over the generated range
      (trapezoidal over ``decode_points``); ``decode_tokens_per_s`` = batch / step seconds.
    - ``bytes_per_step``: weights + every slot's state read and written + KV cache read up to the
      position, averaged the same way; ``bandwidth_fraction`` = bytes_per_step / step seconds /
      device bandwidth (1.0 is the HBM-bandwidth bound).
    - ``peak_memory_bytes``: the cell's peak (see ``device.peak_memory_source``).
    - ``compiled``: whether the decode step ran compiled (``profile.compile``); ``compile_error`` says
      why not when compiling was asked for and failed; ``prefill_compile_errors``: the prefill's pointwise
      functions that could not be compiled and ran eagerly (:mod:`thinkfast.models.pointwise`), with why.
    """

    model: str
    batch: int
    seqlen: int
    prompt_len: int
    gen_len: int
    status: str
    reason: str | None = None
    estimated_bytes: int | None = None
    prefill_seconds: float | None = None
    prefill_tokens_per_s: float | None = None
    decode_step_ms: float | None = None
    decode_tokens_per_s: float | None = None
    bytes_per_step: int | None = None
    bandwidth_fraction: float | None = None
    peak_memory_bytes: int | None = None
    cuda_graph: bool | None = None
    compiled: bool | None = None
    compile_error: str | None = None
    prefill_compile_errors: dict[str, str] = field(default_factory=dict)
    decode_points: list[DecodePoint] = field(default_factory=list)


@dataclass
class ProfileResult:
    """A whole sweep (the content of ``profile.json``)."""

    created: str
    device: dict[str, Any]
    dtype: str
    versions: dict[str, str | None]
    settings: dict[str, Any]
    baseline: str
    models: list[ModelInfo] = field(default_factory=list)
    cells: list[CellResult] = field(default_factory=list)
    schema: str = SCHEMA

    def cell(self, model: str, batch: int, seqlen: int) -> CellResult | None:
        """The result of ``model`` at (``batch``, ``seqlen``), if measured."""
        for c in self.cells:
            if (c.model, c.batch, c.seqlen) == (model, batch, seqlen):
                return c
        return None

    def speedup(self, model: str, batch: int, seqlen: int) -> float | None:
        """Decode tokens/s of ``model`` over the baseline's at one cell (None unless both are ok)."""
        mine, base = self.cell(model, batch, seqlen), self.cell(self.baseline, batch, seqlen)
        if mine is None or base is None or not mine.decode_tokens_per_s or not base.decode_tokens_per_s:
            return None
        return mine.decode_tokens_per_s / base.decode_tokens_per_s

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def write(self, path: Path) -> Path:
        """Write ``profile.json`` (pretty-printed, strict JSON: a non-finite number is null) and return its path."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(strict_json.dumps(self.to_json(), indent=2) + "\n")
        return path


def read_result(path: Path) -> ProfileResult:
    """Load a ``profile.json`` written by :meth:`ProfileResult.write`."""
    data = json.loads(Path(path).read_text())
    models = [ModelInfo(**m) for m in data.pop("models")]
    cells = []
    for c in data.pop("cells"):
        points = [DecodePoint(**p) for p in c.pop("decode_points")]
        cells.append(CellResult(**c, decode_points=points))
    return ProfileResult(**data, models=models, cells=cells)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment_versions() -> dict[str, str | None]:
    """Versions of what decides the numbers: thinkfast, torch, CUDA, Python and the CUDA kernel packages."""
    versions: dict[str, str | None] = {
        "thinkfast": thinkfast.__version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }
    for package in ("mamba-ssm", "causal-conv1d", "flash-attn"):
        version = _version(package)
        if version is not None:
            versions[package.replace("-", "_")] = version
    return versions


