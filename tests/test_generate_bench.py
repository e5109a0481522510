"""`bench/generate_bench.py --tiny` runs on the CPU and writes the JSON it promises."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("generate_bench", ROOT / "bench" / "generate_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("generate_bench", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_tiny_bench_writes_rows_ratios_and_bounds(tmp_path):
    bench = _bench()
    out = tmp_path / "bench.json"
    result = bench.main(["--tiny", "--cases", "student-teacher,hf", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rows = {(r["case"], r["impl"], r["model"]): r for r in result["rows"]}
    assert set(rows) == {("student-teacher", "thinkfast", "tiny-llamba"),
                         ("student-teacher", "thinkfast", "tiny-llama"),
                         ("hf", "thinkfast", "tiny-llama"), ("hf", "transformers", "tiny-llama")}
    for row in rows.values():
        assert row["tokens_per_s"] > 0 and 0 < row["frac_of_bound"] and row["bound_ms_per_step"] > 0
    ours = rows[("student-teacher", "thinkfast", "tiny-llamba")]
    assert ours["extra"]["decode_steps"] >= ours["new_tokens"] - 1 and ours["extra"]["prefills"] == ours["batch"]
    assert set(result["ratios"]) == {"hf: thinkfast / transformers @ batch 4",
                                     "student-teacher: student @ batch 8 / teacher @ batch 8"}
    assert result["bandwidth_GBps"] > 0 and result["card"].startswith("cpu")


def test_step_bytes_count_weights_state_and_kv():
    bench = _bench()
    step = bench.StepBytes(weights=1000, state=10, kv_per_token=2)
    # positions 4..7 are decoded: the KV read spans 5..8 tokens, 6.5 on average
    assert step.average(batch=3, prompt_len=4, new_tokens=4) == 1000 + 3 * (2 * 10 + 2 * 6.5)


def test_tiny_workload_case_runs_continuous_batching_and_splits_its_time():
    """The `workload` case (the paper miniature's sampling, random weights) refills slots as samples end."""
    bench = _bench()
    result = bench.main(["--tiny", "--cases", "workload"])
    rows = {r["model"]: r for r in result["rows"]}
    assert set(rows) == {"tiny-llama", "tiny-hybrid"}
    for row in rows.values():
        extra = row["extra"]
        assert extra["samples"] == 4 * 4 and 0 < extra["eos_fraction"] < 1  # lengths vary: some samples end early
        assert extra["cycles"] > 1 and extra["prefills"] >= 4 and row["tokens_per_s"] > 0
        assert extra["prefill_seconds"] > 0 and extra["decode_seconds"] > 0
