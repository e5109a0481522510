"""The sweep: every model over every grid cell, each cell measured independently.

For one model at one cell (``B`` slots, ``S = P + G`` tokens):

1. estimate the peak (weights + ``B`` slots' cache + workspace, :mod:`thinkfast.profile.memory`);
   above the limit the cell is ``skipped``;
2. allocate the cache for ``B`` slots of ``S`` tokens;
3. prefill: one random ``P``-token prompt into all ``B`` slots, median of ``repeats`` after ``warmup``;
4. decode: one step for all ``B`` slots at each of ``decode_points`` positions spread over
   ``[P, S - 1]`` (median each), averaged over the range; this gives the time per step as if all
   ``G`` tokens had been generated, without spending ``G`` steps per cell;
5. an out-of-memory error anywhere in 2-4 makes the cell ``oom``; memory is freed and the sweep goes on.
"""

from __future__ import annotations

import datetime as dt
import gc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from thinkfast.config.validate import to_dict
from thinkfast.devices import DTYPES, device_name, resolve_device, resolve_dtype
from thinkfast.kernels import select_kernels
from thinkfast.models import pointwise
from thinkfast.profile.config import ProfileSection
from thinkfast.profile.decode import DecodeStep, decode_positions, trapezoid_mean
from thinkfast.profile.grid import Cell, build_grid, format_bytes, parse_memory
from thinkfast.profile.memory import (
    CacheFootprint,
    apply_cap,
    device_memory,
    enforce_cap,
    estimate_cell_bytes,
    free_memory,
    is_out_of_memory,
    measure_cache_footprint,
    memory_limit,
    peak_bytes,
    reset_peak,
    tensor_bytes,
)
from thinkfast.profile.results import (
    CellResult,
    DecodePoint,
    ModelInfo,
    ProfileResult,
    environment_versions,
)
from thinkfast.profile.shapes import check_spec, load_profile_model, spec_kind
from thinkfast.profile.timing import measure_bandwidth, median_time


@dataclass(frozen=True)
class CellSettings:
    """How each cell is measured (resolved from the ``[profile]`` section)."""

    warmup: int
    repeats: int
    decode_points: int
    cuda_graphs: bool
    compile: bool
    cap_bytes: int | None
    limit_bytes: int
    skip_estimated: bool
    state_dtype: torch.dtype
    bandwidth: float  # bytes/s


@dataclass
class ProfiledModel:
    """A model ready to profile, with what the estimates need."""

    info: ModelInfo
    model: torch.nn.Module
    footprint: CacheFootprint


def prepare_model(spec: str, device: torch.device, dtype: torch.dtype, state_dtype: torch.dtype,
                  kernels_section: Any = None) -> ProfiledModel:
    """Load or build ``spec`` on ``device``, select its kernels, measure its weights and per-slot cache bytes.

    Kernels come from the model's own recipe when ``spec`` is one, else from ``kernels_section``
    (the profile recipe's ``[kernels]``; None means "auto" for every operation). On the ``meta``
    device (estimates only) built-in shapes allocate nothing and no kernels are selected.
    """
    loaded = load_profile_model(spec, device, dtype)
    model = loaded.model.eval()
    kernels: dict[str, str] = {}
    if device.type != "meta":
        selected = select_kernels(loaded.kernels_section or kernels_section, device)
        model.set_kernels(selected)
        kernels = selected.names()
        model.fuse_projections()  # as the generate engine runs it, for prefill and decode alike
    config = model.config
    footprint = measure_cache_footprint(model, dtype, state_dtype)
    info = ModelInfo(
        name=loaded.name, source=loaded.source, spec=spec, student=config.student,
        num_params=sum(p.numel() for p in model.parameters()), weight_bytes=tensor_bytes(list(model.parameters())),
        mixers={kind: config.mixers.count(kind) for kind in ("attention", "ssm")},
        cache_fixed_bytes=footprint.fixed, cache_bytes_per_token=footprint.per_token, kernels=kernels,
    )
    return ProfiledModel(info, model, footprint)


def _bytes_per_step(pm: ProfiledModel, batch: int, position: int) -> int:
    """Bytes a step at ``position`` must move: weights, every slot's state read+written, KV read up to it + written."""
    fp = pm.footprint
    return pm.info.weight_bytes + batch * (2 * fp.fixed + fp.per_token * (position + 1))


def estimate_cell(pm: ProfiledModel, cell: Cell, limit_bytes: int) -> CellResult:
    """A result holding only the memory estimate: status ``"skipped"`` above ``limit_bytes``, else ``"planned"``."""
    config = pm.model.config
    estimated = estimate_cell_bytes(pm.info.weight_bytes, pm.footprint, cell.batch, cell.seqlen, cell.prompt_len,
                                    config.vocab_size, config.hidden_size, config.intermediate_size)
    result = CellResult(model=pm.info.name, batch=cell.batch, seqlen=cell.seqlen, prompt_len=cell.prompt_len,
                        gen_len=cell.gen_len, status="planned", estimated_bytes=estimated)
    if estimated > limit_bytes:
        result.status = "skipped"
        cache = cell.batch * pm.footprint.slot_bytes(cell.seqlen)
        result.reason = (f"estimated {format_bytes(estimated)} (cache {format_bytes(cache)}) > limit "
                         f"{format_bytes(limit_bytes)}")
    return result


def _error_line(exc: BaseException, width: int) -> str:
    """``Type: first line of the message`` (at most ``width`` characters of it): an OOM as a reason."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:width]}"


def profile_cell(pm: ProfiledModel, cell: Cell, device: torch.device, settings: CellSettings) -> CellResult:
    """Measure one model at one cell; OOM and over-limit estimates become the cell's status."""
    result = estimate_cell(pm, cell, settings.limit_bytes)
    if result.status == "skipped" and settings.skip_estimated:
        return result
    result.status, result.reason = "ok", None
    error: str | None = None
    try:
        _measure(pm, cell, device, settings, result)
    except Exception as exc:  # only out-of-memory errors are a result; anything else is a bug
        if not is_out_of_memory(exc):
            raise
        error = _error_line(exc, 200)
    if error is not None:
        result.status, result.reason = "oom", error
        for name in ("prefill_seconds", "prefill_tokens_per_s", "decode_step_ms", "decode_tokens_per_s",
                     "bytes_per_step", "bandwidth_fraction", "peak_memory_bytes", "cuda_graph", "compiled"):
            setattr(result, name, None)
        result.decode_points = []
    free_memory(device)
    return result


@torch.inference_mode()
def _measure(pm: ProfiledModel, cell: Cell, device: torch.device, settings: CellSettings,
             result: CellResult) -> None:
    """Fill ``result`` with prefill and decode timings for one cell (may raise an out-of-memory error)."""
    model, config = pm.model, pm.model.config
    reset_peak(device)
    cache = model.allocate_cache(cell.batch, cell.seqlen, dtype=next(model.parameters()).dtype,
                                 state_dtype=settings.state_dtype)
    held = pm.info.weight_bytes + tensor_bytes(cache)
    enforce_cap(device, held, settings.cap_bytes)

    prompt = torch.randint(0, config.vocab_size, (cell.prompt_len,), device=device)  # (P,)
    slots = torch.arange(cell.batch, device=device)  # (B,)
    prefill_s = median_time(lambda: model.prefill(prompt, cache, slots), device, settings.warmup, settings.repeats)
    result.prefill_seconds = prefill_s
    result.prefill_compile_errors = pointwise.compile_errors()
    result.prefill_tokens_per_s = cell.prompt_len / prefill_s

    step = DecodeStep(model, cache, cell.batch, config.vocab_size, device, settings.cuda_graphs,
                      compile=settings.compile and device.type == "cuda")
    result.cuda_graph = step.graph is not None
    result.compiled = step.compiled
    result.compile_error = step.compile_error
    positions = decode_positions(cell.prompt_len, cell.gen_len, settings.decode_points)
    for position in positions:
        seconds = median_time(step.at(position), device, settings.warmup, settings.repeats)
        result.decode_points.append(DecodePoint(position, seconds * 1e3, _bytes_per_step(pm, cell.batch, position)))
    step_s = trapezoid_mean(positions, [p.step_ms / 1e3 for p in result.decode_points])
    result.decode_step_ms = step_s * 1e3
    result.decode_tokens_per_s = cell.batch / step_s
    result.bytes_per_step = round(trapezoid_mean(positions, [p.bytes_moved for p in result.decode_points]))
    result.bandwidth_fraction = result.bytes_per_step / step_s / settings.bandwidth
    result.peak_memory_bytes = peak_bytes(device, held)


def _baseline(section: ProfileSection, models: list[ModelInfo]) -> str:
    if section.baseline:
        return next(info.name for info in models if info.spec == section.baseline)
    for info in models:
        if info.mixers.get("ssm", 0) == 0:
            return info.name
    return models[0].name


def run_profile(section: ProfileSection, device_spec: str = "auto", dtype_spec: str = "auto",
                kernels_section: Any = None, on_cell: Callable[[CellResult], None] | None = None,
                on_model: Callable[[ModelInfo], None] | None = None,
                on_cell_start: Callable[[Cell, int, int], None] | None = None) -> ProfileResult:
    """Run the whole sweep of ``section`` and return its :class:`ProfileResult`.

    For the progress display: ``on_model`` is called once each model is ready, ``on_cell_start(cell,
    number, count)`` before a loaded model's cell is measured (``number`` counts from 1 over that model's
    ``count`` cells) and ``on_cell`` after each cell. Models are built one at a time and freed before the next.
    """
    device = resolve_device(device_spec)
    dtype = resolve_dtype(dtype_spec, device)
    cells = build_grid(section.batch, section.seqlen, section.prompt_len, section.gen_len)
    for spec in section.models:
        check_spec(spec)  # fail before any measurement on a name that is no model, or a broken model file
    cap = parse_memory(section.memory_cap) if section.memory_cap else None
    if section.bandwidth:
        bandwidth, bandwidth_source = section.bandwidth * 1e9, "given"
    else:
        bandwidth, bandwidth_source = measure_bandwidth(device), "measured"
    free_memory(device)  # blocks cached by earlier work in this process must not count against the cap
    apply_cap(device, cap)  # after the bandwidth copy, whose buffers a small cap would not hold
    settings = CellSettings(
        warmup=section.warmup, repeats=section.repeats, decode_points=section.decode_points,
        cuda_graphs=section.cuda_graphs, compile=section.compile, cap_bytes=cap, limit_bytes=memory_limit(device, cap),
        skip_estimated=section.skip_estimated, state_dtype=DTYPES[section.state_dtype], bandwidth=bandwidth,
    )
    result = ProfileResult(
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        device={"type": device.type, "name": device_name(device), "memory_bytes": device_memory(device),
                "bandwidth_bytes_per_s": bandwidth, "bandwidth_source": bandwidth_source,
                "peak_memory_source": "allocator" if device.type == "cuda" else "tensors"},
        dtype=str(dtype).removeprefix("torch."),
        versions=environment_versions(),
        settings={**to_dict(section), "memory_cap_bytes": cap, "limit_bytes": settings.limit_bytes},
        baseline="",
    )
    torch.manual_seed(0)
    for spec in section.models:
        pm: ProfiledModel | None = None
        unloaded: UnloadedModel | None = None
        error: str | None = None
        try:
            pm = prepare_model(spec, device, dtype, settings.state_dtype, kernels_section)
        except Exception as exc:  # a model that does not fit (under the cap) is a result, like a cell's OOM
            if not is_out_of_memory(exc):
                raise
            error = _error_line(exc, 160)
        if error is not None:  # outside the except block: the traceback's frames (the partial model) are gone
            free_memory(device)
            unloaded = _unloaded_model(spec, dtype, settings, error)
        info = pm.info if pm is not None else unloaded.info
        if any(other.name == info.name for other in result.models):
            info.name = spec
        result.models.append(info)
        if on_model is not None:
            on_model(info)
        if pm is not None:
            pm.model.compile_pointwise(settings.compile and device.type == "cuda")  # as generate runs its prefills
        for number, cell in enumerate(cells, 1):
            if pm is not None and on_cell_start is not None:
                on_cell_start(cell, number, len(cells))
            cell_result = profile_cell(pm, cell, device, settings) if pm is not None else unloaded.cell(cell)
            result.cells.append(cell_result)
            if on_cell is not None:
                on_cell(cell_result)
        del pm, unloaded
        gc.collect()
        free_memory(device)
    result.baseline = _baseline(section, result.models)
    return result


@dataclass
class UnloadedModel:
    """A model that ran out of memory while it was being built, and every cell marked ``oom`` with why.

    A built-in shape is described from a build on the ``meta`` device (free), with each cell's memory
    estimate; a model directory or recipe is not loaded again (on the CPU it could exhaust host memory
    too), so only its name is known.
    """

    info: ModelInfo
    estimate: ProfiledModel | None
    reason: str

    def cell(self, cell: Cell) -> CellResult:
        if self.estimate is not None:
            result = estimate_cell(self.estimate, cell, 2**62)  # the estimate, with no limit to report
        else:
            result = CellResult(model=self.info.name, batch=cell.batch, seqlen=cell.seqlen,
                                prompt_len=cell.prompt_len, gen_len=cell.gen_len, status="oom")
        result.status, result.reason = "oom", self.reason
        return result


def _unloaded_model(spec: str, dtype: torch.dtype, settings: CellSettings, error: str) -> UnloadedModel:
    """:class:`UnloadedModel` for ``spec``, whose build on the device failed with ``error`` (out of memory)."""
    limit = format_bytes(settings.cap_bytes) if settings.cap_bytes else "the device's memory"
    if spec_kind(spec) == "shape":
        estimate = prepare_model(spec, torch.device("meta"), dtype, settings.state_dtype)
        reason = (f"the model itself ({format_bytes(estimate.info.weight_bytes)} of weights) did not fit under "
                  f"{limit}: {error}")
        return UnloadedModel(estimate.info, estimate, reason)
    info = ModelInfo(name=Path(spec).name or spec, source=spec_kind(spec), spec=spec, student="", num_params=0,
                     weight_bytes=0, mixers={}, cache_fixed_bytes=0, cache_bytes_per_token=0)
    return UnloadedModel(info, None, f"the model itself did not fit under {limit}: {error}")


def plan_profile(section: ProfileSection, device_spec: str = "auto", dtype_spec: str = "auto") -> list[CellResult]:
    """Memory estimates of every model x cell without running anything (``thinkfast profile --dry-run``).

    Built-in shapes are built on the ``meta`` device (no memory, no time); directories and recipes
    are loaded on the CPU. Each result's status is ``"planned"`` or ``"skipped"`` (with the reason).
    """
    device = resolve_device(device_spec)
    dtype = resolve_dtype(dtype_spec, device)
    cells = build_grid(section.batch, section.seqlen, section.prompt_len, section.gen_len)
    cap = parse_memory(section.memory_cap) if section.memory_cap else None
    limit = memory_limit(device, cap)
    results = []
    for spec in section.models:
        build_on = torch.device("meta" if spec_kind(spec) == "shape" else "cpu")
        pm = prepare_model(spec, build_on, dtype, DTYPES[section.state_dtype])
        results.extend(estimate_cell(pm, cell, limit) for cell in cells)
    return results
