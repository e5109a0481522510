"""``thinkfast profile`` on a CUDA device: graph-captured decode, device-event timing, allocator peaks, real OOMs.

Skipped without CUDA. Run on the GPU machine with ``python -m pytest tests/test_profile_gpu.py -q``.
"""

from __future__ import annotations

import pytest
import torch

from thinkfast.profile.config import ProfileSection
from thinkfast.profile.runner import run_profile
from thinkfast.profile.timing import measure_bandwidth

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_tiny_sweep_on_cuda_captures_the_decode_step_and_reports_allocator_peaks():
    section = ProfileSection(models=["tiny-llama", "tiny-hybrid"], batch=[1, 64], seqlen=[256], warmup=2,
                             repeats=3, plots=False)
    result = run_profile(section, "cuda", "bfloat16")
    assert result.device["type"] == "cuda" and result.device["peak_memory_source"] == "allocator"
    assert result.device["bandwidth_bytes_per_s"] > 1e11  # any HBM card moves > 100 GB/s
    models = {m.name: m for m in result.models}
    for cell in result.cells:
        assert cell.status == "ok", cell.reason
        assert cell.cuda_graph is True
        # the allocator's peak (not the CPU's sum of tensors) holds at least the weights and the cell's cache
        model = models[cell.model]
        held = model.weight_bytes + cell.batch * (model.cache_fixed_bytes + cell.seqlen * model.cache_bytes_per_token)
        assert cell.peak_memory_bytes >= held
        assert 0 < cell.bandwidth_fraction < 1.5


def test_a_real_cuda_oom_is_recorded_and_the_sweep_goes_on():
    free, _ = torch.cuda.mem_get_info()
    section = ProfileSection(models=["tiny-llama"], batch=[1, 4096], seqlen=[4096, 8192], memory_cap="1G",
                             skip_estimated=False, warmup=1, repeats=1, plots=False, bandwidth=1000.0)
    try:
        result = run_profile(section, "cuda", "bfloat16")
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    statuses = {(c.seqlen, c.batch): c.status for c in result.cells}
    assert statuses[(4096, 4096)] == "oom"  # 4096 slots x 4096 tokens x 512 bytes of KV: 8 GiB > 1 GiB
    assert statuses[(4096, 1)] == "ok" and statuses[(8192, 1)] == "ok"  # the cell after the OOM ran
    assert torch.cuda.mem_get_info()[0] > free - 2**30  # the failed cell's memory was given back


def test_bandwidth_measurement_is_plausible():
    bandwidth = measure_bandwidth(torch.device("cuda"))
    assert 1e11 < bandwidth < 1e13
