"""The paper's result in miniature (docs/results.md): its recipes, its helper, and a CPU dry run of the
whole pipeline through ``scripts/paper_miniature.sh`` (stage -> assemble -> sft -> pure -> hybrid -> probe
-> generate -> evaluate -> collect) with ``TOY=1``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from thinkfast.config.loader import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "paper"
SCRIPT = ROOT / "scripts" / "paper_miniature.sh"
sys.path.insert(0, str(ROOT / "scripts"))
import paper_helper  # noqa: E402

GSM8K_LINES = 7473
HELD_OUT = 500
LABELS = ["SmolLM2-135M-SFT", "Llamba-135M", "MambaInLlama-135M-attn25"]
DISTILL_RECIPES = ["teacher_sft.toml", "pure_llamba.toml", "hybrid_mambainllama.toml"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _script(workdir: Path, phases: str, *, seed: int = 0, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PAPER_WORKDIR": str(workdir), "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1",
                "HF_DATASETS_OFFLINE": "1", **env}
    return subprocess.run(["bash", str(SCRIPT), phases, str(seed)], env=full_env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.parametrize("name", sorted(p.name for p in RECIPES.glob("*.toml")))
def test_paper_recipes_validate(name):
    recipe = load_recipe(RECIPES / name)
    assert recipe.run.seed == 0


def test_training_never_reads_the_held_out_problems():
    """Every distill stage reads GSM8K train [0, 6973); generation reads the last 500 lines [6973, 7473)."""
    gen = load_recipe(RECIPES / "generate.toml").generate
    assert (gen.data.offset, gen.data.limit, gen.n_samples) == (GSM8K_LINES - HELD_OUT, HELD_OUT, 64)
    assert 0.6 <= gen.temperature <= 1.0 and gen.data.template == "chat"
    for name in DISTILL_RECIPES:
        for stage in load_recipe(RECIPES / name).distill.stages:
            data = stage.data
            assert data.dataset == gen.data.dataset and data.path == gen.data.path and data.split == gen.data.split
            assert data.template == gen.data.template, f"{name}: train and test prompts must be rendered alike"
            assert data.offset + data.limit <= gen.data.offset, f"{name} stage {stage.name} reads held-out lines"
            assert data.limit == GSM8K_LINES - HELD_OUT


def test_students_and_stages():
    pure = load_recipe(RECIPES / "pure_llamba.toml")
    hybrid = load_recipe(RECIPES / "hybrid_mambainllama.toml")
    assert pure.student.kind == "llamba" and [s.kind for s in pure.distill.stages] == ["matrix", "hidden", "kd"]
    assert hybrid.student.kind == "mambainllama" and hybrid.distill.stages[-1].kind == "kd"
    assert hybrid.student.options["attention_fraction"] == 0.25
    sft = load_recipe(RECIPES / "teacher_sft.toml")
    assert sft.student.kind == "transformer" and [s.kind for s in sft.distill.stages] == ["sft"]
    # both students distill from the SFT teacher's output directory
    assert pure.teacher.model == hybrid.teacher.model == f"{sft.run.output_dir}/student"


def test_overrides_toy_and_scale_are_valid_recipes():
    for name in DISTILL_RECIPES:
        original = load_recipe(RECIPES / name).distill.stages
        toy = load_recipe(RECIPES / name, paper_helper.stage_overrides(RECIPES / name, True, 1.0)[1::2])
        assert [s.kind for s in toy.distill.stages] == [s.kind for s in original]
        assert all(s.steps == 1 and s.data.limit == 8 and s.data.offset == 0 for s in toy.distill.stages)
        half = load_recipe(RECIPES / name, paper_helper.stage_overrides(RECIPES / name, False, 0.5)[1::2])
        for a, b in zip(original, half.distill.stages, strict=True):
            assert (b.steps, b.tokens) == ((-(-a.steps // 2), a.tokens) if a.steps else (0, a.tokens // 2))
            assert (b.lr, b.seq_len, b.data.limit) == (a.lr, a.seq_len, a.data.limit)
    assert paper_helper.stage_overrides(RECIPES / "teacher_sft.toml", False, 1.0) == []


def test_batch_size_pick_is_smallest_within_tolerance(tmp_path):
    cells = [("a", 256, 100.0), ("a", 512, 180.0), ("a", 1024, 196.0), ("a", 2048, 200.0),
             ("b", 256, 50.0), ("b", 512, None)]
    profile = {"settings": {"models": ["x/a", "x/b", "x/c"]},
               "cells": [{"model": m, "batch": b, "status": "ok" if t else "oom", "decode_tokens_per_s": t}
                         for m, b, t in cells]}
    assert paper_helper.pick_batch_sizes(profile, 0.05) == {"a": 1024, "b": 256}
    assert paper_helper.pick_batch_sizes(profile, 0.0) == {"a": 2048, "b": 256}
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "paper_helper.py"), "batch-sizes", str(path), "64"],
                         capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:3] == ["a 1024", "b 256", "c 64"]


def test_stage_and_assemble_round_trip(smollm_gguf, gsm8k_train_path, tmp_path):
    env = {"GGUF_SRC": str(smollm_gguf), "GSM8K_SRC": str(gsm8k_train_path)}
    staged = _script(tmp_path, "stage", **env)
    assert staged.returncode == 0, staged.stderr
    parts = [tmp_path / ".xfer1" / "part", tmp_path / ".xfer2" / "part"]
    assert all(p.stat().st_size < 50_000_000 for p in parts)
    assert sum(p.stat().st_size for p in parts) == smollm_gguf.stat().st_size
    assert _sha256(smollm_gguf) in staged.stdout
    assert (tmp_path / ".data" / "gsm8k_train.jsonl").read_bytes() == gsm8k_train_path.read_bytes()

    # a corrupted part is refused and leaves no model behind
    good = parts[1].read_bytes()
    parts[1].write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    bad = _script(tmp_path, "assemble")
    assert bad.returncode == 2 and "sha256" in bad.stderr
    assert not (tmp_path / ".models" / smollm_gguf.name).exists()

    parts[1].write_bytes(good)
    assert _script(tmp_path, "assemble").returncode == 0
    assert _sha256(tmp_path / ".models" / smollm_gguf.name) == _sha256(smollm_gguf)
    again = _script(tmp_path, "assemble")
    assert again.returncode == 0 and "skip" in again.stdout


def test_phase_errors_name_the_missing_step(tmp_path):
    result = _script(tmp_path, "pure")
    assert result.returncode == 2 and "teacher-sft/student is missing: run the 'sft' phase" in result.stderr
    result = _script(tmp_path, "bogus")
    assert result.returncode == 2 and "unknown phase 'bogus'" in result.stderr


@pytest.mark.slow
def test_toy_pipeline_end_to_end(smollm_gguf, gsm8k_train_path, tiny_llama_dir, tmp_path):
    """Every phase of the real pipeline at toy scale on the CPU (a tiny Llama stands in for SmolLM2)."""
    out = tmp_path / "out"
    env = {"TOY": "1", "TOY_TEACHER": str(tiny_llama_dir), "OUT": str(out), "GGUF_SRC": str(smollm_gguf),
           "GSM8K_SRC": str(gsm8k_train_path)}
    result = _script(tmp_path, "stage,assemble,sft,pure,hybrid,probe,generate,evaluate,collect", **env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    root = tmp_path / "runs" / "paper" / "seed0"

    # the students are what the recipes ask for, distilled from the SFT teacher
    mixers = {name: json.loads((root / name / "student" / "config.json").read_text())["mixers"]
              for name in ("teacher-sft", "llamba", "mambainllama")}
    assert set(mixers["teacher-sft"]) == {"attention"} and set(mixers["llamba"]) == {"ssm"}
    assert mixers["mambainllama"].count("attention") == round(0.25 * len(mixers["mambainllama"]))
    stages = [json.loads(line)["stage"] for line in (root / "llamba" / "metrics.jsonl").read_text().splitlines()]
    assert stages == ["matrix", "hidden", "kd"]

    # generation: the held-out problems only, same settings for every model
    settings = []
    for label in LABELS:
        run = json.loads((root / "gen" / label / "run.json").read_text())
        assert run["status"] == "complete" and run["num_samples"] == 8 * 4
        settings.append({k: v for k, v in run["settings"].items() if k not in ("model", "student")})
        ids = {json.loads(line)["problem_id"] for line in (root / "gen" / label / "samples.jsonl").open()}
        assert ids == {f"gsm8k-train-{i}" for i in range(GSM8K_LINES - HELD_OUT, GSM8K_LINES - HELD_OUT + 8)}
    assert settings[0] == settings[1] == settings[2]

    report = json.loads((root / "eval" / "report.json").read_text())
    assert [r["model"] for r in report["results"]] == LABELS
    for r in report["results"]:
        assert r["problems"] == 8 and r["n_samples"] == 4 and r["coverage"]["k"] == [1, 2, 4]
        assert all(s is not None and s > 0 for s in r["accuracy"]["majority"]["seconds"])

    # collect: at most 8 files, each under 16 MiB, the report and the four plots among them
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all((out / f).stat().st_size < 16 << 20 for f in files)
    assert "report-seed0.json" in files and sum(f.endswith(".png") for f in files) == 4
    phases = [line.split("\t")[1] for line in (root / "phases.tsv").read_text().splitlines()]
    assert phases == ["assemble", "sft", "pure", "hybrid", "probe", "generate", "evaluate", "collect"]

    # every phase is restartable: finished work is skipped
    again = _script(tmp_path, "sft,pure,hybrid,generate", **env)
    assert again.returncode == 0 and again.stdout.count("skip:") == 6, again.stdout

    # STATE_DTYPE generates beside the recipe's run, from the same models, with that SSM state dtype
    variant = _script(tmp_path, "generate-pure,collect", **env, STATE_DTYPE="bfloat16")
    assert variant.returncode == 0, variant.stdout[-3000:] + variant.stderr[-3000:]
    run = json.loads((tmp_path / "runs" / "paper" / "seed0-statebfloat16" / "gen" / LABELS[1] / "run.json").read_text())
    assert run["status"] == "complete" and run["state_dtype"] == "bfloat16"
    assert (out / "artifacts-seed0-statebfloat16.tar.gz").is_file()


def test_majority_vote_when_no_sample_has_an_answer():
    """A problem none of whose samples has an answer (a weak student) must not stop `evaluate`."""
    import numpy as np

    from thinkfast.evaluate.aggregation import weighted_vote

    classes = np.full((3, 4), -1)
    chosen = weighted_vote(classes, np.ones(classes.shape), 0, np.random.default_rng(0))
    assert chosen.tolist() == [-1, -1, -1]


def test_call_budget_stops_the_chain_but_still_collects(tmp_path):
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "gsm8k_train.jsonl").write_text("")
    out = tmp_path / "out"
    result = _script(tmp_path, "sft,pure,collect", CALL_BUDGET="1", TOY="1", TOY_TEACHER=str(tmp_path), OUT=str(out))
    assert result.returncode == 75, result.stdout + result.stderr
    assert "out of CALL_BUDGET" in result.stdout and "skipping pure" in result.stdout
    assert (out / "artifacts-seed0.tar.gz").is_file()
    phases = (tmp_path / "runs" / "paper" / "seed0" / "phases.tsv").read_text().splitlines()
    assert [line.split("\t")[1:5:3] for line in phases] == [["sft", "rc=75"], ["collect", "done"]]
