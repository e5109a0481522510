"""Errors under ``torchrun``: every rank exits non-zero, and the user reads one message, not one per rank."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import ROOT, torchrun
from click.testing import CliRunner

from thinkfast.cli import cli, ranks


def test_a_bad_recipe_key_is_reported_once_not_once_per_rank(tmp_path):
    result = torchrun("generate", "--model", str(tmp_path / "m"), "--set", "generate.bogus=1", "-o",
                       str(tmp_path / "out"))
    assert result.returncode != 0
    assert result.stderr.count("unknown key") == 1, result.stderr
    assert "error: --set 'generate.bogus=1': unknown key" in result.stderr


def test_a_missing_data_file_stops_a_two_rank_distill_with_one_message(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""
[run]
device = "cpu"
[teacher]
model = "{tmp_path / 'teacher'}"
[[distill.stages]]
kind = "kd"
steps = 1
data = {{ dataset = "gsm8k", path = "{tmp_path / 'nope.jsonl'}" }}
""")
    result = torchrun("distill", str(recipe), "-o", str(tmp_path / "out"))
    assert result.returncode != 0
    assert result.stderr.count("nope.jsonl") == 1, result.stderr
    assert "error: " in result.stderr and "rank 1" not in result.stderr


def test_an_error_only_another_rank_hit_is_still_printed_naming_the_rank(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(ranks, "RANK_ZERO_GRACE_S", 0.0)  # rank 0 carried on: nobody stops this rank
    result = CliRunner().invoke(cli, ["generate", "--set", "generate.bogus=1"], prog_name="thinkfast")
    assert result.exit_code == 2
    assert result.stderr.startswith("rank 1: error: --set 'generate.bogus=1': unknown key"), result.stderr


@pytest.mark.parametrize("command", ["generate", "distill"])
def test_a_rank_variable_that_is_not_a_number_is_one_message_naming_it(command, monkeypatch, tmp_path):
    """Before: a ValueError traceback from int() ('invalid literal for int() with base 10')."""
    recipe = tmp_path / "r.toml"
    recipe.write_text('[run]\ndevice = "cpu"\n[[distill.stages]]\nkind = "sft"\nsteps = 1\n')
    monkeypatch.setenv("LOCAL_RANK", "")
    result = CliRunner().invoke(cli, [command, str(recipe), "-o", str(tmp_path / "out")], prog_name="thinkfast",
                                catch_exceptions=False)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("error: environment variable LOCAL_RANK='' is not a number; torchrun sets "), \
        result.stderr
    assert not (tmp_path / "out").exists()


def test_ctrl_c_is_reported_by_rank_zero_only(monkeypatch):
    from thinkfast.cli import generate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "load_recipe", interrupted)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, expected in (("0", "interrupted"), ("1", "")):
        monkeypatch.setenv("RANK", rank)
        result = CliRunner().invoke(cli, ["generate"], prog_name="thinkfast")
        assert result.exit_code == 130 and result.stderr.strip().startswith(expected), result.stderr
        assert expected or not result.stderr.strip()


def test_torchrun_passes_every_subcommand_option_through(capsys):
    """torchrun parses its whole command line and stops at an option that could abbreviate two of its own
    (``--n`` -> --nnodes, --nproc-per-node, ...); every option a subcommand has under some name reaches it."""
    import click
    from torch.distributed.run import get_args_parser

    parser = get_args_parser()
    refused = []
    for name, command in cli.commands.items():
        for param in command.params:
            if not isinstance(param, click.Option) or param.name == "help":
                continue
            passed = []
            for opt in param.opts + param.secondary_opts:
                try:
                    parser.parse_args(["--nproc-per-node", "2", "-m", "thinkfast", name, opt, "1"])
                except SystemExit:
                    continue
                passed.append(opt)
            if not passed:
                refused.append(f"{name} {'/'.join(param.opts)}")
    capsys.readouterr()
    assert not refused


# --- a crash (a bug in thinkfast, not a user error) ------------------------------------------------------

#: ``thinkfast recipe show`` with a bug planted in recipe loading on the ranks listed in CRASH_RANKS: the
#: exception goes up through thinkfast's own code (loader, validate, the CLI) as a real bug's would.
PLANTED_BUG = """
import os

from thinkfast.config import validate


def to_dict(*args, **kwargs):
    rank = os.environ["RANK"]
    if rank in os.environ["CRASH_RANKS"].split(","):
        raise RuntimeError(f"planted bug on rank {rank}")
    return original(*args, **kwargs)


original, validate.to_dict = validate.to_dict, to_dict
from thinkfast.cli import main  # noqa: E402

main()
"""


def _crash(tmp_path: Path, crash_ranks: str) -> tuple[subprocess.CompletedProcess, Path]:
    script = tmp_path / "planted_bug.py"
    script.write_text(PLANTED_BUG)
    recipe = tmp_path / "r.toml"
    recipe.write_text('[run]\nname = "crash"\n')
    return torchrun("recipe", "show", str(recipe), script=script, env={"CRASH_RANKS": crash_ranks}), script


def test_a_crash_on_every_rank_prints_one_traceback_and_one_line_per_other_rank(tmp_path):
    result, script = _crash(tmp_path, "0,1")
    assert result.returncode != 0
    assert result.stderr.count(f'File "{script}"') == 1, result.stderr  # one traceback went through the bug
    assert "rank 0 crashed:\nTraceback (most recent call last):" in result.stderr
    assert "RuntimeError: planted bug on rank 0" in result.stderr
    assert ("rank 1: crashed the same way as rank 0 (RuntimeError: planted bug on rank 1); see rank 0's traceback"
            in result.stderr), result.stderr


def test_a_crash_on_one_rank_only_still_prints_its_traceback(tmp_path):
    result, script = _crash(tmp_path, "1")
    assert result.returncode != 0
    assert result.stderr.count(f'File "{script}"') == 1, result.stderr
    assert "rank 1 crashed:\nTraceback (most recent call last):" in result.stderr
    assert "RuntimeError: planted bug on rank 1" in result.stderr
    assert 'name = "crash"' in result.stdout  # rank 0 did its work


def test_a_rank_that_crashed_another_way_than_a_lower_rank_prints_its_own_traceback(monkeypatch, capsys):
    """Ranks compare crashes through the torchrun agent's store (here a real one in this process): the same
    place (type and frames) is one line that still gives this rank's message; another place, a traceback."""
    from datetime import timedelta

    from torch.distributed import TCPStore

    from thinkfast.cli.crash import report_crash

    store = TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=5))
    for name, value in {"TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(store.port), "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "test"}.items():
        monkeypatch.setenv(name, value)

    def bug(rank: int):
        raise KeyError(f"shard {rank}")

    def another_bug(rank: int):
        raise KeyError(f"shard {rank}")

    def crash(rank: int, where) -> str:
        monkeypatch.setenv("RANK", str(rank))
        try:
            where(rank)
        except KeyError as exc:
            with pytest.raises(SystemExit) as stopped:
                report_crash(exc)
        assert stopped.value.code == 1
        return capsys.readouterr().err

    assert crash(0, bug).startswith("rank 0 crashed:\nTraceback")
    other = crash(1, another_bug)
    assert other.startswith("rank 1 crashed:\nTraceback") and "KeyError: 'shard 1'" in other
    assert crash(1, bug) == "rank 1: crashed the same way as rank 0 (KeyError: 'shard 1'); see rank 0's traceback\n"


#: A "store" that accepts connections and never answers (a stale MASTER_PORT now held by another program, a
#: hung agent): torch's TCPStore client then blocks forever whatever its timeout. Ranks 0 and 1 crash in turn.
SILENT_STORE = """
import os, socket, sys, threading, time

from thinkfast.cli import crash

server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(8)
held = []
threading.Thread(target=lambda: [held.append(server.accept()) for _ in iter(int, 1)], daemon=True).start()
os.environ.update(TORCHELASTIC_USE_AGENT_STORE="True", MASTER_ADDR="127.0.0.1", WORLD_SIZE="2",
                  MASTER_PORT=str(server.getsockname()[1]))
crash.CRASH_GRACE_S = crash._STORE_S = 0.5
for rank in ("0", "1"):
    os.environ["RANK"] = rank
    started = time.perf_counter()
    try:
        raise ValueError(f"bug on rank {rank}")
    except ValueError as exc:
        try:
            crash.report_crash(exc)
        except SystemExit as stop:
            print(f"rank {rank} exit {stop.code} after {time.perf_counter() - started:.1f} s", flush=True)
"""


def test_a_store_that_never_answers_delays_no_crash_report_past_the_grace_time(tmp_path):
    """Before: report_crash connected to the store before printing anything, and a store that accepts but never
    answers blocked that connection forever, so a crash printed nothing and never exited (the job hung)."""
    script = tmp_path / "silent_store.py"
    script.write_text(SILENT_STORE)
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=30,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "rank 0 crashed:\nTraceback" in result.stderr and "ValueError: bug on rank 0" in result.stderr
    assert "rank 1 crashed:\nTraceback" in result.stderr and "ValueError: bug on rank 1" in result.stderr
    exits = [line.split() for line in result.stdout.splitlines()]
    assert [(words[1], words[3]) for words in exits] == [("0", "1"), ("1", "1")], result.stdout
    # rank 0 prints at once and waits at most _STORE_S to record; rank 1 also waits its grace time (0.5 s each)
    assert all(float(words[5]) < 3.0 for words in exits), result.stdout


#: ``thinkfast generate`` with a bug planted in rank 1's engine: rank 0 finishes its shard and waits for rank 1
#: at the barrier before the merge, where gloo tells it "Connection closed by peer" once rank 1 goes away.
PEER_CRASH = """
import os
import time

from thinkfast.generate import engine


def generate(self, *args, **kwargs):
    if os.environ["RANK"] == "1":
        time.sleep(2)  # rank 0 is at the barrier by now
        raise RuntimeError("planted bug on rank 1")
    return original(self, *args, **kwargs)


original, engine.Engine.generate = engine.Engine.generate, generate
from thinkfast.cli import main  # noqa: E402

main()
"""


def test_a_rank_left_waiting_by_a_crashed_one_says_so_in_one_line(tiny_llama_dir, gsm8k_train_path, tmp_path):
    """Before: rank 0 printed a whole traceback of gloo's "Connection closed by peer" ahead of the real one."""
    script = tmp_path / "peer_crash.py"
    script.write_text(PEER_CRASH)
    result = torchrun("generate", "--model", str(tiny_llama_dir), "--dataset", "gsm8k", "--data-path",
                      str(gsm8k_train_path), "--limit", "2", "--n-samples", "1", "--max-new-tokens", "4", "--device",
                      "cpu", "--template", "plain", "-o", str(tmp_path / "out"), script=script, timeout=300)
    assert result.returncode != 0
    assert ("rank 0: stopped because another rank of the job went away during a collective operation (Connection "
            "closed by peer); that rank's message says why\n") in result.stderr, result.stderr
    assert "rank 0 crashed" not in result.stderr and "GLHF" not in result.stderr, result.stderr
    assert "rank 1 crashed:\nTraceback (most recent call last):" in result.stderr
    assert result.stderr.count(f'File "{script}"') == 1 and "RuntimeError: planted bug on rank 1" in result.stderr


def test_only_torch_distributed_saying_the_peer_is_gone_counts_as_a_peer_going_away():
    from thinkfast.cli.crash import peer_went_away

    try:
        raise RuntimeError("Connection closed by peer")  # our own code's words: a crash like any other
    except RuntimeError as exc:
        assert peer_went_away(exc) is None
    import torch.distributed as dist

    try:
        dist.barrier()  # no process group: torch.distributed's own error, not a peer going away
    except (RuntimeError, ValueError) as exc:
        assert peer_went_away(exc) is None
