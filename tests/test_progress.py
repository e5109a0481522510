"""Progress as a user meets it, through real runs of the CLI on the CPU: a bar in a terminal that is gone
before Ctrl-C's message, plain lines now and then in a log, and numbers that stay meaningful below 1."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from cli_run import distill_recipe

from thinkfast.tables import format_number, format_significant

INTERRUPTED = "interrupted; anything already written is kept"
# the CLI with an exit that takes half a second (CUDA teardown, a slow file system): a bar left running
# would redraw itself meanwhile, below the message
SLOW_EXIT = ("import atexit, time; atexit.register(time.sleep, 0.5); "
             "from thinkfast.cli import main; main()")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _generate_args(model: Path, data: Path, out: Path, limit: int, max_new_tokens: int) -> list[str]:
    return ["generate", "--model", str(model), "--dataset", "gsm8k", "--data-path", str(data), "--limit", str(limit),
            "--n", "4", "--max-new-tokens", str(max_new_tokens), "--batch-size", "4", "--template", "plain",
            "--device", "cpu", "-o", str(out)]


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    return {**env, "HF_HUB_OFFLINE": "1", "TERM": "xterm-256color", **extra}


def _ctrl_c_in_a_terminal(args: list[str], ready: str) -> tuple[int, str]:
    """Run the CLI (with a slow exit) in a 120x40 pseudo-terminal, press Ctrl-C (SIGINT to its process
    group) once ``ready`` is on the screen, and return the exit code and everything it wrote."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its stdin, stdout and stderr
        try:
            os.execve(sys.executable, [sys.executable, "-c", SLOW_EXIT, *args], _env())
        finally:
            os._exit(127)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    output, sent, deadline = b"", False, time.monotonic() + 180
    while time.monotonic() < deadline:
        if not sent and ready.encode() in output:
            time.sleep(0.3)  # a few frames of the bar
            os.killpg(pid, signal.SIGINT)
            sent = True
        if select.select([fd], [], [], 0.1)[0]:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
    else:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    text = output.decode(errors="replace")
    assert sent, f"{ready!r} never appeared: {text[-2000:]}"
    return os.waitstatus_to_exitcode(status), text


@pytest.mark.parametrize("command", ["distill", "generate"])
def test_ctrl_c_message_is_the_last_line_and_the_bar_is_not_drawn_again(command, tiny_llama_dir, gsm8k_train_path,
                                                                       tmp_path):
    """Ctrl-C in a terminal: the bar stops (its last frame stays), then the message follows on a line of its
    own and nothing after it, not even while the process takes its time to exit; the cursor shows again."""
    if command == "distill":
        recipe = distill_recipe(tmp_path, tiny_llama_dir, gsm8k_train_path, steps=5000)
        args, ready = ["distill", str(recipe), "-o", str(tmp_path / "out")], "step "
    else:
        args, ready = _generate_args(tiny_llama_dir, gsm8k_train_path, tmp_path / "out", 100, 400), "samples"
    code, text = _ctrl_c_in_a_terminal(args, ready)
    assert code == 130, text[-2000:]
    plain = ANSI.sub("", text)
    assert plain.endswith(f"\r\n{INTERRUPTED}\r\n"), repr(plain[-400:])
    assert "━" in plain  # the bar was there
    assert text.rfind("\x1b[?25h") > text.rfind("\x1b[?25l")  # the cursor the bar hid is shown again


PROGRESS_LINE = {
    "distill": re.compile(r"^0:hidden \d+% step \d+/6 loss \d+\.\d{4} [\d,.]+ tok/s lr \d\.\d\de-\d\d "
                          r"\d+:\d\d:\d\d ETA \S+$"),
    "generate": re.compile(r"^generate \d+% \d+/16 samples (\S+ tok/s )?\d+:\d\d:\d\d$"),
}


def _run_into_a_log(args: list[str], tmp_path: Path, seconds: str) -> str:
    """Run the CLI with stdout and stderr written to a file (``2>run.log``); return what the log holds."""
    log = tmp_path / f"run-{seconds}.log"
    with log.open("w") as fh:
        result = subprocess.run([sys.executable, "-m", "thinkfast", *args], stdout=fh, stderr=subprocess.STDOUT,
                                env=_env(THINKFAST_PROGRESS_SECONDS=seconds), timeout=300)
    with log.open(newline="") as fh:  # carriage returns (a redrawn bar) kept as they are
        text = fh.read()
    assert result.returncode == 0, text
    return text


@pytest.mark.parametrize("command", ["distill", "generate"])
def test_a_log_gets_plain_progress_lines_and_no_bar(command, tiny_llama_dir, gsm8k_train_path, tmp_path):
    """stderr to a file: no bar, no frame of it at the end, no colour codes, no redrawn tqdm bar of the
    libraries that load the model (transformers' "Loading weights"); a plain line with the bar's fields every
    THINKFAST_PROGRESS_SECONDS (here all the time), and none at all with 0."""
    def args(out: str) -> list[str]:
        if command == "distill":
            recipe = distill_recipe(tmp_path, tiny_llama_dir, gsm8k_train_path, steps=6)
            return ["distill", str(recipe), "-o", str(tmp_path / out)]
        return _generate_args(tiny_llama_dir, gsm8k_train_path, tmp_path / out, 4, 24)

    often = _run_into_a_log(args("often"), tmp_path, "0.000001")
    lines = [line for line in often.splitlines() if PROGRESS_LINE[command].match(line)]
    assert lines, often
    assert "━" not in often and "\x1b[" not in often
    assert "\r" not in often and "it/s]" not in often, often
    never = _run_into_a_log(args("never"), tmp_path, "0")
    assert "━" not in never and not any(PROGRESS_LINE[command].match(line) for line in never.splitlines())


def test_profile_progress_in_a_log_is_one_line_per_model_and_cell(tmp_path):
    """A log is as wide as its lines: a model's line is not broken at 80 columns."""
    log = _run_into_a_log(["profile", "--models", "tiny-llama,tiny-llamba", "--batch", "1", "--seqlen", "24",
                           "--warmup", "0", "--repeats", "1", "--decode-points", "2", "--bandwidth", "5",
                           "--no-plots", "-o", str(tmp_path / "out")], tmp_path, "60")
    lines = log.splitlines()
    progress = lines[:next(i for i, line in enumerate(lines) if "decode tokens/s on" in line)]
    assert [line.split(":")[0] for line in progress if not line.startswith("  batch")] == ["tiny-llama",
                                                                                           "tiny-llamba"]
    assert all("kernels {" in line and line.endswith("}") for line in progress if line.startswith("tiny"))
    assert sum(line.startswith("  batch") for line in progress) == 2


def test_a_profile_cell_still_running_says_so_in_a_log(tmp_path):
    """A cell longer than THINKFAST_PROGRESS_SECONDS gets "still measuring" lines naming it, all before its
    result line; a cell that ends sooner gets none (the test above, at 60 s)."""
    log = _run_into_a_log(["profile", "--models", "tiny-llamba", "--batch", "2", "--seqlen", "96,128",
                           "--warmup", "1", "--repeats", "2", "--decode-points", "3", "--bandwidth", "5",
                           "--no-plots", "-o", str(tmp_path / "out")], tmp_path, "0.02")
    lines = log.splitlines()
    results = [i for i, line in enumerate(lines) if re.match(r"  batch     2  length +\d+  decode", line)]
    assert len(results) == 2, log
    for number, length in enumerate((96, 128), 1):
        running = [i for i, line in enumerate(lines) if re.fullmatch(
            rf"  batch     2  length {length:>6}  measuring \(cell {number} of 2\), 0:00:\d\d so far", line)]
        assert running, log
        assert ([0] + results)[number - 1] < min(running) <= max(running) < results[number - 1], log


def test_current_work_on_a_terminal_is_a_spinner_that_is_gone_when_it_ends():
    from rich.console import Console

    from thinkfast.progress import CurrentWork

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, force_interactive=True, width=100)
    with CurrentWork(console) as work:
        work.begin("  batch   512  length   8192  measuring (cell 3 of 4)")
        time.sleep(0.3)
        assert "measuring (cell 3 of 4)" in ANSI.sub("", screen.getvalue())
    drawn = len(screen.getvalue())
    time.sleep(0.3)
    assert len(screen.getvalue()) == drawn  # nothing redrawn once it ended
    assert "\x1b[2K" in screen.getvalue()[-40:]  # the line was erased (transient)


def test_current_work_in_a_log_writes_nothing_after_it_ends(monkeypatch):
    from rich.console import Console

    from thinkfast.progress import SECONDS_ENV, CurrentWork

    log = io.StringIO()
    console = Console(file=log, force_terminal=False, force_interactive=False, width=100)
    monkeypatch.setenv(SECONDS_ENV, "0.01")
    work = CurrentWork(console)
    work.begin("  loading")
    time.sleep(0.2)
    work.end()
    written = log.getvalue()
    time.sleep(0.1)
    assert log.getvalue() == written
    assert written and set(written.splitlines()) == {"  loading, 0:00:00 so far"}
    monkeypatch.setenv(SECONDS_ENV, "0")
    work.begin("  quiet")
    time.sleep(0.1)
    work.end()
    assert log.getvalue() == written


def test_a_bad_progress_interval_is_one_message_before_any_work(tmp_path):
    result = subprocess.run([sys.executable, "-m", "thinkfast", "profile", "--models", "tiny-llama", "-o",
                             str(tmp_path / "out")], capture_output=True, text=True,
                            env=_env(THINKFAST_PROGRESS_SECONDS="soon"), timeout=300)
    assert result.returncode == 2
    assert result.stderr == ("error: THINKFAST_PROGRESS_SECONDS='soon' is not a number of seconds; set it to "
                             "e.g. 60, or 0 for no progress lines in logs\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value, decimals, text", [
    (1826.3, 0, "1,826"), (7.4, 0, "7"), (0.42, 0, "0.42"), (0.0031, 0, "0.0031"), (0.0, 0, "0"),
    (151.256, 2, "151.26"), (0.004, 2, "0.004"), (0.04, 1, "0.04"), (12.34, 1, "12.3"),
])
def test_a_number_below_its_precision_keeps_two_significant_digits(value, decimals, text):
    assert format_number(value, decimals) == text


@pytest.mark.parametrize("value, text", [(0.0123, "0.0123"), (0.5, "0.5"), (12.34, "12.3"), (1234.5, "1,235"),
                                         (98765.4, "98,765")])
def test_significant_digits_never_use_scientific_notation(value, text):
    assert format_significant(value) == text


@pytest.mark.parametrize("value, decimals, text", [
    (6.25, 1, "6.3"), (18.75, 1, "18.8"), (31.25, 1, "31.3"), (-6.25, 1, "-6.3"),  # 100 * 2/32, 6/32, 10/32
    (2.5, 0, "3"), (1234.5, 0, "1,235"), (0.5, 0, "1"),  # 0.5 tok/s is not 0
    (100 * 0.0725, 1, "7.3"),  # 7.249999999999999 in binary: rounds as the 7.25 it stands for
    (7.24, 1, "7.2"), (123456789012345.6, 0, "123,456,789,012,346"),
])
def test_halves_round_up_as_a_reader_expects(value, decimals, text):
    """Python's own formatting rounds half to even (6.25 -> 6.2 beside 18.75 -> 18.8, 0.5 -> 0)."""
    assert format_number(value, decimals) == text


@pytest.mark.parametrize("value, digits, text", [(6.25, 2, "6.3"), (2.675, 3, "2.68"), (0.0625, 2, "0.063")])
def test_significant_digits_round_halves_up(value, digits, text):
    assert format_significant(value, digits) == text
