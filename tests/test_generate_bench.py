"""`bench/generate_bench.py --tiny` runs on the CPU and writes the JSON it promises."""

from __future__ import annotations

import importlib.util
import json
import math
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


def test_repeats_time_every_row_as_often_and_report_the_median_run(tmp_path):
    bench = _bench()
    result = bench.main(["--tiny", "--cases", "hf", "--repeats", "3", "--device", "cpu"])
    assert [(r["impl"], len(r["extra"]["repeat_seconds"])) for r in result["rows"]] == [
        ("thinkfast", 3), ("transformers", 3)]
    for row in result["rows"]:
        assert row["seconds"] == sorted(row["extra"]["repeat_seconds"])[1]


def test_median_run_keeps_the_median_runs_product():
    bench = _bench()
    times = iter([3.0, 1.0, 2.0, 5.0])
    seconds, product, every = bench.median_run(3, lambda: (t := next(times), f"run at {t}"))
    assert (seconds, product, every) == (2.0, "run at 2.0", [3.0, 1.0, 2.0])
    assert bench.median_run(0, lambda: (7.0, "once"))[1:] == ("once", [7.0])  # at least one run
    times = iter([4.0, 1.0])
    assert bench.median_run(2, lambda: (next(times), None))[0] == 1.0  # even count: the lower middle


def test_bench_bandwidth_is_the_library_copy_bandwidth(monkeypatch):
    """The HBM bound's bandwidth is thinkfast.profile.timing.measure_bandwidth's (bytes/s), not a copy of it."""
    import thinkfast.profile.timing as timing

    calls = []

    def fake(device, nbytes=None, repeats=5):
        calls.append((device.type, nbytes, repeats))
        return 123e9

    monkeypatch.setattr(timing, "measure_bandwidth", fake)
    bench = _bench()
    result = bench.main(["--tiny", "--cases", "", "--device", "cpu"])
    assert calls == [("cpu", 1 << 22, 20)] and result["bandwidth_GBps"] == 123.0 and result["rows"] == []


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
        assert (extra["prefill_bucket"], extra["split_requests"], extra["warmup_seconds"]) == (64, False, 0.0)
        assert extra["prefills"] == 4  # one prefill per prompt: its samples start together

    split = bench.main(["--tiny", "--cases", "workload", "--workload-shapes", "tiny-llama", "--split-requests",
                        "--prefill-bucket", "1", "--overlap-prefill"])["rows"][0]["extra"]
    assert split["split_requests"] and split["prefill_bucket"] == 1 and split["samples"] == 16
    # overlapped: a cycle that starts with no slot running (the first one) only prefills
    assert split["overlap_prefill"] and split["decode_steps"] < split["cycles"] * split["check_every"]


def test_stop_check_bench_replays_checks_over_real_text(tmp_path, smollm_tokenizer, capsys):
    spec = importlib.util.spec_from_file_location("stop_check_bench", ROOT / "bench" / "stop_check_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    texts = ["2 + 3 = 5\n#### 5\nQuestion: more", "no answer here, just words " * 8, "#### 7"]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    smollm_tokenizer.save_pretrained(tmp_path / "tok")
    result = module.main(["--samples", str(samples), "--tokenizer", str(tmp_path / "tok"), "--check-every", "4"])
    assert result["samples"] == 3 and result["fired"] == 1  # only the first has a complete answer line
    assert result["checks"] >= 2 and result["ms_per_check"] > 0
    assert "the rules fired for 1 samples" in capsys.readouterr().out


def test_decode_tokens_per_s_counts_only_the_tokens_decode_steps_generated():
    """Each sample's first token is sampled from its prefill's logits: the decode-only rate counts the other
    ``new_tokens - 1`` of every row, not one token per slot for every decode step (with 16 new tokens and a
    check every 16 steps the engine runs 16 steps, the last one after every slot was done)."""
    bench = _bench()
    result = bench.main(["--tiny", "--cases", "student-teacher", "--device", "cpu"])
    for row in result["rows"]:
        extra = row["extra"]
        decoded = row["batch"] * (row["new_tokens"] - 1)
        assert extra["decoded_tokens"] == decoded and extra["decode_steps"] == row["new_tokens"]
        assert math.isclose(row["decode_tokens_per_s"] * extra["decode_seconds"], decoded, rel_tol=1e-9)

    workload = bench.main(["--tiny", "--cases", "workload", "--workload-shapes", "tiny-llama", "--device", "cpu"])
    row = workload["rows"][0]
    extra = row["extra"]
    assert math.isclose(row["decode_tokens_per_s"] * extra["decode_seconds"], extra["tokens"] - extra["samples"],
                        rel_tol=1e-9)
