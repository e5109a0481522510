"""``thinkfast profile``: grid parsing, memory estimates and caps, OOM recording, profile.json, the plot, the CLI.

Every sweep here runs the real tiny models (``tiny-*`` shapes) on the CPU with one repeat, so the
numbers are noisy; the tests check structure and relations that hold whatever the timings are.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner
from rich.console import Console

from thinkfast.cli import cli
from thinkfast.errors import RecipeError
from thinkfast.plotting import COLUMN_WIDTH, FULL_WIDTH
from thinkfast.profile.config import ProfileSection
from thinkfast.profile.decode import DecodeStep, decode_positions, trapezoid_mean
from thinkfast.profile.grid import (
    Cell,
    build_grid,
    format_bytes,
    parse_memory,
    parse_size,
    parse_sizes,
    split_length,
)
from thinkfast.profile.memory import MemoryCapExceeded, estimate_cell_bytes, is_out_of_memory, tensor_bytes
from thinkfast.profile.plots import decode_throughput_figure, plot_decode_throughput
from thinkfast.profile.report import comparison_table, detail_tables
from thinkfast.profile.results import SCHEMA, read_result
from thinkfast.profile.runner import plan_profile, prepare_model, run_profile

CPU = torch.device("cpu")
FAST = {"warmup": 0, "repeats": 1, "decode_points": 2, "bandwidth": 10.0, "plots": False}


# --- grid parsing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("512", [512]), ("8k", [8192]), ("32k", [32768]), ("8K", [8192]), ("1m", [1048576]), ("1.5k", [1536]),
    ("1,8,64,512", [1, 8, 64, 512]), ("512, 1 ,64", [1, 64, 512]), ("1k,8k", [1024, 8192]), ("8,8", [8]),
    ([1, "2k"], [1, 2048]),
])
def test_sizes_parse_single_values_lists_and_suffixes(text, expected):
    assert parse_sizes(text) == expected


@pytest.mark.parametrize("text, message", [
    ("x", "not a size"), ("8q", "not a size"), ("", "empty"), (",", "empty"), ("1.3k", "whole number"),
    ("-4", "not a size"), ("0", "below the minimum 1"),
])
def test_bad_sizes_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message):
        parse_sizes(text, "--batch")


def test_memory_amounts_binary_and_decimal():
    assert parse_memory("80G") == parse_memory("80GiB") == 80 * 2**30
    assert parse_memory("80GB") == 80 * 10**9
    assert parse_memory("512M") == 512 * 2**20
    assert parse_memory("1.5k") == 1536
    assert parse_memory("1000") == parse_memory(1000) == 1000
    with pytest.raises(ValueError, match="not understood"):
        parse_memory("lots")


@pytest.mark.parametrize("n, text", [
    (131.29 * 2**30, "131.29 GiB"), (11 * 2**20, "0.01 GiB"), (10 * 2**20, "10.00 MiB"), (100_000, "97.66 KiB"),
    (1024, "1.00 KiB"), (1000, "1000 bytes"), (0, "0 bytes"),
])
def test_memory_amounts_print_readably_however_small(n, text):
    assert format_bytes(int(n)) == text


def test_lengths_split_into_prompt_and_generated_tokens():
    assert split_length(8192) == (2048, 6144)  # default: a quarter is prompt
    assert split_length(8192, prompt_len=512) == (512, 7680)
    assert split_length(8192, gen_len=1024) == (7168, 1024)
    assert split_length(1024, 256, 768) == (256, 768)
    assert split_length(2) == (1, 1)
    with pytest.raises(ValueError, match="!= seqlen"):
        split_length(1024, 256, 256)
    with pytest.raises(ValueError, match="no room"):
        split_length(512, prompt_len=512)


def test_grid_is_lengths_outer_batches_inner_and_bad_splits_are_recipe_errors():
    grid = build_grid([64, 1], [8192, 1024], prompt_len=parse_size("512"))
    assert grid == [Cell(1, 1024, 512, 512), Cell(64, 1024, 512, 512),
                    Cell(1, 8192, 512, 7680), Cell(64, 8192, 512, 7680)]
    with pytest.raises(RecipeError, match="--prompt-len/--gen-len"):
        build_grid([1], [1024, 512], prompt_len=512)


def test_section_check_reports_bad_cap_and_baseline():
    bad = ProfileSection(models=["tiny-llama"], baseline="tiny-llamba", memory_cap="huge")
    keys = {key for key, _ in bad.check()}
    assert keys == {"baseline", "memory_cap"}


@pytest.mark.parametrize("cap", ["0", "0G", "0GB"])
def test_a_recipe_memory_cap_of_zero_is_refused_not_read_as_no_cap(cap):
    """``memory_cap = "0"`` in a recipe meant "no cap" (the device's memory), silently; --memory-cap 0 is
    refused, and so is the recipe value now, with the same advice."""
    problems = ProfileSection(models=["tiny-llama"], memory_cap=cap).check()
    assert problems == [("memory_cap", f"{cap!r} leaves no memory; give a limit such as '40G', or leave it empty "
                                       f"for the device's memory")]


def test_lengths_that_cannot_be_split_name_the_recipe_file_or_the_flag_they_came_from(tmp_path):
    """A prompt_len the seqlen leaves no room for was always reported as "<command line>: ... (--prompt-len/
    --gen-len)", also when it came from a recipe file; it now names where it was given, before any work."""
    recipe = tmp_path / "p.toml"
    recipe.write_text('[profile]\nmodels = ["tiny-llama"]\nseqlen = [512]\nprompt_len = 512\n')
    from_file = CliRunner().invoke(cli, ["profile", str(recipe), "--dry-run"])
    assert from_file.exit_code == 2
    assert from_file.output == (f"error: {recipe}: profile.prompt_len: seqlen 512 leaves no room for prompt_len 512 "
                                f"and at least one generated token; give a smaller value or longer seqlen values\n")
    from_flags = CliRunner().invoke(cli, ["profile", "--models", "tiny-llama", "--seqlen", "512,1k", "--prompt-len",
                                          "300", "--gen-len", "212", "--dry-run"])
    assert from_flags.exit_code == 2
    assert from_flags.output == ("error: --prompt-len: prompt_len 300 + gen_len 212 != seqlen 1024; give lengths "
                                 "that add up to each seqlen, or only one of the two\n")


# --- decode positions --------------------------------------------------------------------------------

def test_decode_positions_span_the_generated_range():
    assert decode_positions(256, 768, 3) == [256, 640, 1023]
    assert decode_positions(256, 768, 1) == [639]
    assert decode_positions(10, 2, 5) == [10, 11]


def test_trapezoid_mean_is_exact_for_a_linear_step_time():
    xs = decode_positions(100, 900, 4)
    ys = [0.5 + 0.01 * x for x in xs]  # attention: step time linear in the position
    exact = 0.5 + 0.01 * (xs[0] + xs[-1]) / 2
    assert trapezoid_mean(xs, ys) == pytest.approx(exact)
    assert trapezoid_mean([5], [2.0]) == 2.0


def test_decode_step_runs_every_slot_at_the_position_it_is_set_to():
    pm = prepare_model("tiny-llama", CPU, torch.float32, torch.float32)
    cache = pm.model.allocate_cache(3, 16)
    step = DecodeStep(pm.model, cache, 3, pm.model.config.vocab_size, CPU, cuda_graph=True)
    assert step.graph is None  # no graphs off CUDA
    with torch.inference_mode():
        step.at(7)()
    k = cache.layers[0].k  # (B, S, Hkv, Dh)
    written = k.abs().sum(dim=(2, 3)) > 0  # (B, S)
    assert written[:, 7].all() and written.sum() == 3


# --- memory: footprint, estimates, caps, OOM ----------------------------------------------------------

def test_cache_footprint_matches_the_allocated_cache():
    for name, has_kv, has_state in (("tiny-llama", True, False), ("tiny-llamba", False, True),
                                    ("tiny-hybrid", True, True)):
        pm = prepare_model(name, CPU, torch.float32, torch.float32)
        assert (pm.footprint.per_token > 0) == has_kv and (pm.footprint.fixed > 0) == has_state
        assert tensor_bytes(pm.model.allocate_cache(5, 96)) == 5 * pm.footprint.slot_bytes(96)
        assert pm.info.weight_bytes == 4 * pm.info.num_params  # float32, tied weights counted once


def test_dry_run_estimates_the_issue_command_without_allocating():
    section = ProfileSection(models=["llama-3.2-1b", "llamba-1b", "hybrid-1b"], batch=[512], seqlen=[8192],
                             memory_cap="80G")
    plan = {c.model: c for c in plan_profile(section, "cpu", "bfloat16")}
    kv_per_slot = 16 * 2 * 8192 * 8 * 64 * 2  # layers x (K, V) x tokens x kv heads x head dim x bf16 bytes
    assert plan["llama-3.2-1b"].status == "skipped" and plan["llama-3.2-1b"].estimated_bytes > 512 * kv_per_slot
    assert "> limit 80.00 GiB" in plan["llama-3.2-1b"].reason
    assert plan["llamba-1b"].status == plan["hybrid-1b"].status == "planned"
    assert plan["llamba-1b"].estimated_bytes < plan["hybrid-1b"].estimated_bytes < 512 * kv_per_slot


def _cap_between(section_models: list[str], small: Cell, big: Cell) -> int:
    """A cap above the estimate of ``small`` and below the bytes ``big`` holds (weights + cache)."""
    pm = prepare_model(section_models[0], CPU, torch.float32, torch.float32)
    c = pm.model.config
    small_estimate = estimate_cell_bytes(pm.info.weight_bytes, pm.footprint, small.batch, small.seqlen,
                                         small.prompt_len, c.vocab_size, c.hidden_size, c.intermediate_size)
    big_held = pm.info.weight_bytes + big.batch * pm.footprint.slot_bytes(big.seqlen)
    assert small_estimate < big_held
    return (small_estimate + big_held) // 2


@pytest.mark.parametrize("skip_estimated, status", [(True, "skipped"), (False, "oom")])
def test_a_cell_over_the_memory_cap_is_recorded_and_the_sweep_goes_on(skip_estimated, status):
    cells = build_grid([1, 64], [16, 32])  # (16, 1) (16, 64) (32, 1) (32, 64)
    cap = _cap_between(["tiny-llama"], small=cells[2], big=cells[1])
    section = ProfileSection(models=["tiny-llama"], batch=[1, 64], seqlen=[16, 32], memory_cap=str(cap),
                             skip_estimated=skip_estimated, **FAST)
    result = run_profile(section, "cpu", "float32")
    statuses = [(c.seqlen, c.batch, c.status) for c in result.cells]
    assert statuses == [(16, 1, "ok"), (16, 64, status), (32, 1, "ok"), (32, 64, status)]
    failed = result.cell("tiny-llama", 64, 16)
    assert failed.decode_tokens_per_s is None and failed.peak_memory_bytes is None
    assert ("limit" in failed.reason) if status == "skipped" else ("MemoryCapExceeded" in failed.reason)
    assert result.settings["memory_cap_bytes"] == cap


def test_a_model_that_does_not_fit_is_recorded_and_the_sweep_goes_on(monkeypatch):
    from thinkfast.profile import runner

    build = runner.prepare_model

    def out_of_memory_on_the_device(spec, device, *args, **kwargs):
        if spec == "tiny-llama" and device.type != "meta":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 MiB")
        return build(spec, device, *args, **kwargs)

    monkeypatch.setattr(runner, "prepare_model", out_of_memory_on_the_device)
    section = ProfileSection(models=["tiny-llama", "tiny-hybrid"], batch=[1, 2], seqlen=[16], memory_cap="1G", **FAST)
    result = run_profile(section, "cpu", "float32")
    assert [m.name for m in result.models] == ["tiny-llama", "tiny-hybrid"]
    assert result.models[0].num_params > 0  # described from a build on the meta device
    statuses = {(c.model, c.batch): c.status for c in result.cells}
    assert statuses == {("tiny-llama", 1): "oom", ("tiny-llama", 2): "oom",
                        ("tiny-hybrid", 1): "ok", ("tiny-hybrid", 2): "ok"}
    reason = result.cell("tiny-llama", 1, 16).reason
    assert "the model itself" in reason and "did not fit under 1.00 GiB" in reason and "OutOfMemoryError" in reason


def test_a_model_directory_that_does_not_fit_is_not_loaded_again(monkeypatch, tmp_path):
    from thinkfast.profile import runner

    calls = []

    def out_of_memory(spec, device, *args, **kwargs):
        calls.append(device.type)
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(runner, "prepare_model", out_of_memory)
    monkeypatch.setattr(runner, "check_spec", lambda spec: None)
    monkeypatch.setattr(runner, "spec_kind", lambda spec: "directory")
    section = ProfileSection(models=[str(tmp_path / "big-model")], batch=[1], seqlen=[16], **FAST)
    result = run_profile(section, "cpu", "float32")
    assert calls == ["cpu"]  # one try on the device, no second load to describe it
    assert result.models[0].name == "big-model"
    assert [c.status for c in result.cells] == ["oom"] and "did not fit" in result.cells[0].reason


def test_out_of_memory_errors_are_recognised():
    assert is_out_of_memory(MemoryCapExceeded("x"))
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


# --- a whole sweep: profile.json, speedups, plot ------------------------------------------------------

@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    section = ProfileSection(models=["tiny-llamba", "tiny-llama", "tiny-hybrid"], batch=[1, 4], seqlen=[32, 48],
                             prompt_len=8, **FAST)
    result = run_profile(section, "cpu", "float32")
    path = result.write(tmp_path_factory.mktemp("profile") / "profile.json")
    return result, path


def test_profile_json_schema(sweep):
    result, path = sweep
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA
    assert set(data) == {"schema", "created", "device", "dtype", "versions", "settings", "baseline", "models", "cells"}
    assert data["device"]["type"] == "cpu" and data["device"]["name"]
    assert data["device"]["bandwidth_bytes_per_s"] == 10e9 and data["device"]["bandwidth_source"] == "given"
    assert data["dtype"] == "float32" and data["versions"]["torch"] == torch.__version__
    assert data["created"][:4].isdigit() and data["created"].endswith("+00:00")
    assert data["settings"]["batch"] == [1, 4] and data["settings"]["prompt_len"] == 8
    assert [m["name"] for m in data["models"]] == ["tiny-llamba", "tiny-llama", "tiny-hybrid"]
    assert data["models"][2]["mixers"] == {"attention": 1, "ssm": 3}
    assert set(data["models"][1]["kernels"]) == {"ssm", "conv", "attention"}  # the plugin chosen for each
    assert len(data["cells"]) == 3 * 2 * 2
    assert data["device"]["peak_memory_source"] == "tensors"  # no allocator statistics off CUDA
    models = {m["name"]: m for m in data["models"]}
    for cell in data["cells"]:
        assert cell["status"] == "ok" and cell["reason"] is None
        assert cell["prompt_len"] == 8 and cell["gen_len"] == cell["seqlen"] - 8
        assert cell["decode_tokens_per_s"] == pytest.approx(cell["batch"] / (cell["decode_step_ms"] / 1e3))
        assert cell["prefill_tokens_per_s"] == pytest.approx(8 / cell["prefill_seconds"])
        assert [p["position"] for p in cell["decode_points"]] == [8, cell["seqlen"] - 1]
        assert cell["bandwidth_fraction"] == pytest.approx(
            cell["bytes_per_step"] / (cell["decode_step_ms"] / 1e3) / 10e9)
        # on the CPU the peak is what the cell holds: the weights and a cache of `batch` slots of `seqlen` tokens
        model = models[cell["model"]]
        slot = model["cache_fixed_bytes"] + cell["seqlen"] * model["cache_bytes_per_token"]
        assert cell["peak_memory_bytes"] == model["weight_bytes"] + cell["batch"] * slot
        assert cell["cuda_graph"] is False
        assert cell["prefill_compile_errors"] == {}
    assert read_result(path) == result


def test_baseline_is_the_first_all_attention_model_and_speedups_are_ratios(sweep):
    result, _ = sweep
    assert result.baseline == "tiny-llama"
    mine, base = result.cell("tiny-llamba", 4, 48), result.cell("tiny-llama", 4, 48)
    assert result.speedup("tiny-llamba", 4, 48) == pytest.approx(mine.decode_tokens_per_s / base.decode_tokens_per_s)
    assert result.speedup("tiny-llama", 4, 48) == pytest.approx(1.0)


def test_bytes_per_step_grow_with_kv_cache_but_not_for_a_pure_ssm(sweep):
    result, _ = sweep
    ssm, attn = result.cell("tiny-llamba", 4, 48), result.cell("tiny-llama", 4, 48)
    assert ssm.decode_points[0].bytes_moved == ssm.decode_points[-1].bytes_moved
    assert attn.decode_points[-1].bytes_moved > attn.decode_points[0].bytes_moved
    assert result.cell("tiny-llama", 4, 48).bytes_per_step > result.cell("tiny-llama", 4, 32).bytes_per_step


def _with_status(result, status: str, *where: tuple[str, int]):
    """``result`` with the cells of (model, batch) in ``where`` (every length) not measured: ``status``."""
    return dataclasses.replace(result, cells=[
        dataclasses.replace(c, status=status, reason="simulated", decode_tokens_per_s=None, decode_step_ms=None)
        if (c.model, c.batch) in where else c for c in result.cells])


def test_plot_is_a_png_and_a_pdf_of_one_figure_across_a_page(sweep, tmp_path, figure_files):
    """Papers need vector figures: profile.pdf is written beside profile.png, the same figure at the same
    size; two lengths are two panels side by side, as wide as both columns of a paper."""
    result, _ = sweep
    result = _with_status(result, "oom", ("tiny-llama", 4))
    paths = plot_decode_throughput(result, tmp_path / "plots" / "profile.png")
    assert paths == [tmp_path / "plots" / "profile.png", tmp_path / "plots" / "profile.pdf"]
    width, height = figure_files(paths[0])
    assert width == pytest.approx(FULL_WIDTH) and height < width / 2


@pytest.mark.parametrize("width, expected", [(0.0, COLUMN_WIDTH), (5.5, 5.5)])
def test_a_one_length_plot_fits_a_column_of_a_paper_or_the_width_asked(sweep, width, expected,
                                                                       check_figure_readable):
    result, _ = sweep
    one = dataclasses.replace(result, cells=[c for c in result.cells if c.seqlen == 48])
    fig = decode_throughput_figure(one, width)
    assert fig.get_figwidth() == pytest.approx(expected) and fig.get_figheight() < 3.5
    check_figure_readable(fig)  # every text at least 7 pt at this size


def test_unmeasured_cells_are_hollow_markers_in_a_hatched_grey_band_named_in_the_legend(sweep):
    """A skipped or OOM cell was only an ``x`` letter in the model's colour over the blank bottom of the
    panel; it is now the model's marker, hollow, in a grey hatched band that the legend names, and no
    y tick falls in the band (its height is no throughput)."""
    result, _ = sweep
    result = _with_status(_with_status(result, "skipped", ("tiny-llama", 4)), "oom", ("tiny-hybrid", 4))
    fig = decode_throughput_figure(result)
    fig.canvas.draw()
    models = [m.name for m in result.models]
    for ax in fig.axes:
        bands = [p for p in ax.patches if p.get_gid() == "not-measured-band"]
        assert len(bands) == 1 and bands[0].get_hatch() and bands[0].get_facecolor()[:3] == pytest.approx((0.92,) * 3)
        band_top = ax.transData.inverted().transform(ax.transAxes.transform((0, bands[0].get_height())))[1]
        assert all(y > band_top for y in ax.get_yticks() if ax.get_ylim()[0] <= y <= ax.get_ylim()[1])
        curves = dict(zip(models, [line for line in ax.get_lines() if line.get_gid() != "not-measured"],
                          strict=True))
        cells = {next(m for m, curve in curves.items() if curve.get_color() == line.get_color()): line
                 for line in ax.get_lines() if line.get_gid() == "not-measured"}
        assert set(cells) == {"tiny-llama", "tiny-hybrid"}
        for model, line in cells.items():
            assert list(line.get_xdata()) == [4] and line.get_markerfacecolor() == "white"
            assert line.get_marker() == curves[model].get_marker()
            assert 0 < line.get_ydata()[0] < bands[0].get_height()  # in the band (axes fraction)
    assert "OOM or skipped" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_many_batch_sizes_in_three_panels_label_every_other_batch_apart(sweep, check_figure_readable):
    """Ten batch sizes under each of three panels of a page-wide figure: the labels would run into each
    other, so every other one is labelled (all still have a tick)."""
    result, _ = sweep
    template = result.cells[0]
    batches = [2 ** i for i in range(10)]
    cells = [dataclasses.replace(template, model=m.name, batch=b, seqlen=s, decode_tokens_per_s=100.0 * b)
             for m in result.models for b in batches for s in (1024, 8192, 32768)]
    fig = decode_throughput_figure(dataclasses.replace(result, cells=cells))
    check_figure_readable(fig)
    ax = fig.axes[0]
    assert sorted([*ax.get_xticks(), *ax.get_xticks(minor=True)]) == batches
    assert 2 <= len([t for t in ax.get_xticklabels() if t.get_text()]) < len(batches)


def test_tables_fit_80_columns_with_names_numbers_and_reasons_whole(sweep):
    """In an 80-column terminal no cell is cut off with an ellipsis: model names and numbers appear whole,
    and the reason a cell was not measured is all there (wrapped over lines)."""
    result, _ = sweep
    reason = "estimated 2.97 MiB (cache 2.00 MiB) > limit 1.20 MiB"
    skipped = dataclasses.replace(result.cell("tiny-hybrid", 4, 48), status="skipped", reason=reason,
                                  decode_tokens_per_s=None, decode_step_ms=None)
    result = dataclasses.replace(result, cells=[c if c.model != "tiny-hybrid" or (c.batch, c.seqlen) != (4, 48)
                                                else skipped for c in result.cells])
    console = Console(width=80, record=True, highlight=False)
    for table in [comparison_table(result), *detail_tables(result)]:
        console.print(table)
    text = console.export_text()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    for cell in result.cells:
        assert cell.model in text
        if cell.status == "ok":
            assert f"{cell.decode_tokens_per_s:,.0f}" in text and f"{cell.decode_step_ms:.2f}" in text
            assert f"{cell.prefill_tokens_per_s:,.0f}" in text and format_bytes(cell.peak_memory_bytes) in text
    failed = text[text.index("cells not measured"):]
    reasons = " ".join(line.split("│")[-2].strip() for line in failed.splitlines() if line.startswith("│"))
    assert reasons == reason


def test_a_one_panel_plot_reads_cleanly(sweep, check_figure_readable):
    """One length, one panel: the title is not cut at the figure's edges, the legend covers no point,
    the y labels are plain numbers; a skipped cell is still marked."""
    result, _ = sweep
    cells = [c if (c.model, c.batch) != ("tiny-llama", 4) else dataclasses.replace(
        c, status="skipped", reason="simulated", decode_tokens_per_s=None) for c in result.cells if c.seqlen == 48]
    one = dataclasses.replace(result, cells=cells, device={**result.device, "name": "NVIDIA H100 80GB HBM3"})
    fig = decode_throughput_figure(one)
    assert len(fig.axes) == 1
    assert [list(line.get_xdata()) for line in fig.axes[0].get_lines() if line.get_gid() == "not-measured"] == [[4]]
    check_figure_readable(fig)


# --- the command line ----------------------------------------------------------------------------------

def test_cli_tiny_end_to_end(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, [
        "profile", "--models", "tiny-llama,tiny-hybrid", "--batch", "1,2", "--seqlen", "24", "--gen-len", "16",
        "--warmup", "0", "--repeats", "1", "--decode-points", "2", "--bandwidth", "5", "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "profile.json").read_text())
    assert {(c["model"], c["batch"], c["prompt_len"], c["gen_len"]) for c in data["cells"]} == {
        (m, b, 8, 16) for m in ("tiny-llama", "tiny-hybrid") for b in (1, 2)}
    assert (out / "profile.png").read_bytes()[:4] == b"\x89PNG" and (out / "profile.pdf").read_bytes()[:4] == b"%PDF"
    assert f"wrote {out / 'profile.png'}" in result.output and f"wrote {out / 'profile.pdf'}" in result.output
    assert "speedup over tiny-llama" in result.output and "x)" in result.output


def test_cli_figure_width_sets_the_width_of_the_figure_in_inches(tmp_path, figure_files):
    out = tmp_path / "run"
    args = ["profile", "--models", "tiny-llama", "--batch", "1", "--seqlen", "16,24", "--device", "cpu",
            "--warmup", "0", "--repeats", "1", "--decode-points", "1", "--bandwidth", "5", "-o", str(out)]
    result = CliRunner().invoke(cli, [*args, "--figure-width", "5.5"])
    assert result.exit_code == 0, result.output
    assert figure_files(out / "profile.png")[0] == pytest.approx(5.5)
    result = CliRunner().invoke(cli, [*args, "--figure-width", "1"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "error: --figure-width: 1 in is not a figure width; give inches from 2 to 20" in result.output


def test_cli_issue_command_as_written_in_a_dry_run():
    result = CliRunner().invoke(cli, ["profile", "--batch", "512", "--seqlen", "8k", "--dry-run",
                                      "--memory-cap", "80G", "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.output.splitlines() if "│ " in line and "8k" in line}
    assert set(rows) == {"llama-3.2-1b", "llamba-1b", "hybrid-1b"}
    assert "skip" in rows["llama-3.2-1b"] and "run" in rows["llamba-1b"] and "2048+6144" in rows["hybrid-1b"]


def test_cli_prompt_and_gen_len_alone_define_the_length():
    result = CliRunner().invoke(cli, ["profile", "--models", "tiny-llama", "--batch", "2", "--prompt-len", "1k",
                                      "--gen-len", "3k", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "4k" in result.output and "1024+3072" in result.output


def test_cli_every_cell_skipped_writes_json_and_warns_instead_of_plotting(tmp_path):
    """A cap below every estimate: the tables and profile.json, no plot (nothing measured), exit 0."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "profile.png").write_bytes(b"an older sweep's plot")
    (out / "profile.pdf").write_bytes(b"an older sweep's plot")
    result = CliRunner().invoke(cli, [
        "profile", "--models", "tiny-llama,tiny-llamba", "--batch", "1,8", "--seqlen", "64,256", "--device", "cpu",
        "--memory-cap", "100000", "--bandwidth", "5", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    data = json.loads((out / "profile.json").read_text())
    assert {c["status"] for c in data["cells"]} == {"skipped"}
    assert all(c["reason"].endswith("> limit 97.66 KiB") and "0.00 GiB" not in c["reason"] for c in data["cells"])
    assert "no cell was measured (all skipped or OOM): no profile.png or profile.pdf" in result.output
    assert not (out / "profile.png").exists() and not (out / "profile.pdf").exists()


@pytest.mark.parametrize("args, message", [
    (["--batch", "1,x"], "error: --batch: 'x' is not a size"),
    (["--seqlen", "8q"], "error: --seqlen: '8q' is not a size"),
    (["--memory-cap", "lots"], "error: --memory-cap: memory amount 'lots' is not understood"),
    (["--models", "llama-3.2-1bb", "--dry-run"], "did you mean 'llama-3.2-1b'"),
    (["--seqlen", "1k", "--prompt-len", "2k", "--dry-run"],
     "error: --prompt-len: seqlen 1024 leaves no room for prompt_len 2048"),
])
def test_cli_bad_input_exits_2_with_a_message(args, message):
    result = CliRunner().invoke(cli, ["profile", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_long_model_names_fit_in_the_legend_of_a_one_panel_plot(sweep, check_figure_readable):
    """Model directories make long names: the legend under one panel took three columns of them and was cut
    off at both edges of the figure; it now drops columns and wraps names until it fits."""
    result, _ = sweep
    names = {"tiny-llamba": "runs/distill/an-experiment-with-a-rather-long-name/final",
             "tiny-llama": "/data/checkpoints/llama-3.2-1b-instruct-teacher",
             "tiny-hybrid": "runs/distill/hybrid-25pct-attention-stage3/final"}
    models = [dataclasses.replace(m, name=names[m.name]) for m in result.models]
    cells = [dataclasses.replace(c, model=names[c.model]) for c in result.cells if c.seqlen == 48]
    fig = decode_throughput_figure(dataclasses.replace(result, models=models, cells=cells))
    check_figure_readable(fig)
    shown = " ".join(t.get_text().replace("\n", "") for t in fig.legends[0].get_texts())
    assert all(name in shown for name in names.values())


def test_profile_json_is_strict_json_and_round_trips(sweep, tmp_path):
    """A non-finite number (a division by a zero time) is written as null, never NaN/Infinity, which strict
    parsers (jq, JavaScript, Go) reject; every finite number reads back exactly."""
    result, _ = sweep
    broken = dataclasses.replace(result.cells[0], bandwidth_fraction=float("inf"), prefill_tokens_per_s=float("nan"))
    path = dataclasses.replace(result, cells=[broken, *result.cells[1:]]).write(tmp_path / "profile.json")

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    data = json.loads(path.read_text(), parse_constant=refuse)
    assert data["cells"][0]["bandwidth_fraction"] is None and data["cells"][0]["prefill_tokens_per_s"] is None
    back = read_result(path)
    assert back.cells[1:] == result.cells[1:] and back.device == result.device


def test_recipe_keys_take_sizes_as_the_flags_do(tmp_path):
    """Every flag is a [profile] key, and the docs give `seqlen` the default `1k,8k`; yet `seqlen = "8k"` in a
    recipe or `--set profile.seqlen=1k,8k` was refused ("expected list of int"). Now the keys parse sizes as
    the flags do, and a bad one is one error naming the key."""
    recipe = tmp_path / "profile.toml"
    recipe.write_text('[profile]\nmodels = ["tiny-llama"]\nbatch = "1,8"\nseqlen = ["1k", 512]\nprompt_len = "256"\n')
    result = CliRunner().invoke(cli, ["profile", str(recipe), "--dry-run"])
    assert result.exit_code == 0, result.output
    rows = [line.split("│")[2:5] for line in result.output.splitlines() if line.startswith("│")]
    assert [[c.strip() for c in row] for row in rows] == [
        ["512", "256+256", "1"], ["512", "256+256", "8"], ["1k", "256+768", "1"], ["1k", "256+768", "8"]]

    result = CliRunner().invoke(cli, ["profile", "--models", "tiny-llama", "--dry-run", "--set", "profile.batch=512",
                                      "--set", "profile.seqlen=1k,8k"])
    assert result.exit_code == 0, result.output
    assert "8k" in result.output and "2048+6144" in result.output and "│   512 │" in result.output

    result = CliRunner().invoke(cli, ["profile", "--models", "tiny-llama", "--dry-run", "--set", "profile.seqlen=8q"])
    assert result.exit_code == 2
    assert "seqlen '8q' is not a size" in result.output and "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if "error" in line]) == 1


def test_rates_below_one_keep_their_digits_in_every_table(sweep):
    """A large model on the CPU decodes under a token per second: the tables show 0.42, not 0, next to the
    whole numbers of the other cells (right-aligned in their columns), and a bandwidth share under 0.05%
    is not 0.0."""
    result, _ = sweep
    fast = result.cell("tiny-llama", 4, 32)
    slow = dataclasses.replace(result.cell("tiny-llama", 1, 32), decode_tokens_per_s=0.42, prefill_tokens_per_s=0.031,
                               decode_step_ms=2380.95, bandwidth_fraction=0.0004)
    result = dataclasses.replace(result, cells=[slow if (c.model, c.batch, c.seqlen) == ("tiny-llama", 1, 32) else c
                                                for c in result.cells])
    console = Console(width=80, record=True, highlight=False)
    for table in [comparison_table(result), *detail_tables(result)]:
        console.print(table)
    text = console.export_text()
    comparison = text[:text.index("tiny-llama (bandwidth")]
    header = next(line for line in comparison.splitlines() if line.startswith("┃"))
    column = [part.strip() for part in header.split("┃")].index("tiny-llama")
    row = next(line for line in comparison.splitlines() if line.startswith("│") and "8+24" in line.split("│")[2]
               and line.split("│")[3].strip() == "1")
    assert row.split("│")[column].strip() == "0.42"
    detail = text[text.index("tiny-llama (bandwidth"):text.index("tiny-llamba (bandwidth")]  # the baseline first
    rows = [line for line in detail.splitlines() if line.startswith("│") and line.split("│")[1].strip() == "32"]
    cells = {line.split("│")[2].strip(): [part.strip() for part in line.split("│")[3:-1]] for line in rows}
    assert cells["1"][:3] == ["0.031", "2,380.95", "0.42"] and cells["1"][-1] == "0.04"
    assert cells["4"][2] == f"{fast.decode_tokens_per_s:,.0f}"
    assert len({line.rindex("│", 0, len(line) - 1) for line in rows}) == 1  # one column edge for every row


def test_speedups_far_below_one_and_halves_read_as_they_are(sweep):
    """A student 250 times slower than the baseline is 0.004x, not 0.00x; a speedup of 1.125 rounds up to 1.13x
    as a reader rounds it (Python's formatting gives 1.12x)."""
    result, _ = sweep
    base = {(c.batch, c.seqlen): c.decode_tokens_per_s for c in result.cells if c.model == result.baseline}
    ratios = {(1, 32): 0.004, (4, 32): 1.125}
    cells = [dataclasses.replace(c, decode_tokens_per_s=base[c.batch, c.seqlen] * ratios[c.batch, c.seqlen])
             if c.model == "tiny-llamba" and (c.batch, c.seqlen) in ratios else c for c in result.cells]
    console = Console(width=120, record=True, highlight=False)
    console.print(comparison_table(dataclasses.replace(result, cells=cells)))
    text = console.export_text()
    assert "(0.004x)" in text and "(1.13x)" in text
    assert "(0.00x)" not in text
