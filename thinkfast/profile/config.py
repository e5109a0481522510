"""The ``[profile]`` recipe section."""

from __future__ import annotations

from dataclasses import dataclass

from thinkfast.config.fields import option
from thinkfast.plotting import FIGURE_WIDTH_HELP, check_figure_width
from thinkfast.profile.grid import parse_size, parse_sizes


def _sizes(key: str, minimum: int):
    """The recipe's ``batch`` / ``seqlen`` as the flags take them: ``512``, ``"8k"``, ``"1k,8k"``, ``[1, "2k"]``."""
    return lambda value: parse_sizes(value, key, minimum)


def _size(key: str):
    """``prompt_len`` / ``gen_len`` as the flags take them: ``512`` or ``"2k"``."""
    return lambda value: parse_size(value, key)


@dataclass
class ProfileSection:
    """Throughput and memory over a batch x length grid (every flag of `thinkfast profile` sets one key)."""

    models: list[str] = option(
        ["llama-3.2-1b", "llamba-1b", "hybrid-1b"],
        "Built-in shapes (random weights: llama-3.2-1b, llamba-1b, hybrid-1b, their -3b and tiny- variants), "
        "model directories or recipe files.")
    batch: list[int] = option([1, 64, 512], "Batch sizes (decode slots): a list, one size, or a string as `--batch` "
                              "takes it (\"1,8,64\").", unit="sequences", min=1, parse=_sizes("batch", 1))
    seqlen: list[int] = option([1024, 8192], "Total lengths per sequence (prompt + generated): a list, one length, "
                               "or a string with k = 1024 as `--seqlen` takes it (\"8k\", \"1k,8k\").",
                               unit="tokens", min=2, parse=_sizes("seqlen", 2))
    prompt_len: int = option(0, "Prompt tokens of each length (512 or \"2k\"); 0 means seqlen - gen_len, or "
                             "seqlen/4 if both are 0.", unit="tokens", min=0, parse=_size("prompt_len"))
    gen_len: int = option(0, "Generated tokens of each length (512 or \"2k\"); 0 means seqlen - prompt_len.",
                          unit="tokens", min=0, parse=_size("gen_len"))
    warmup: int = option(2, "Untimed calls before timing each measurement.", min=0)
    repeats: int = option(5, "Timed repeats per measurement (the median is reported).", min=1)
    decode_points: int = option(3, "Positions, evenly spaced over the generated range, at which a decode step is "
                                   "timed; the step time is their trapezoidal average.", min=1, max=64)
    state_dtype: str = option("float32", "dtype of the SSM and conv states in the cache.",
                              choices=("float32", "bfloat16", "float16"))
    cuda_graphs: bool = option(True, "Capture the decode step in a CUDA graph (GPU only; falls back to eager).")
    compile: bool = option(False, "Compile the decode step with torch.compile first, and the prefill's elementwise "
                           "work, as `generate` does (GPU only; adds seconds of compilation per cell).")
    memory_cap: str = option("", "Memory limit such as '40G' (GiB) or '40GB'; empty means the device's memory. "
                                 "Cells estimated above it are skipped; going above it while running is an OOM.")
    skip_estimated: bool = option(True, "Skip cells whose estimated memory exceeds the limit instead of trying them.")
    bandwidth: float = option(0.0, "Device memory bandwidth for the bandwidth-bound fraction; 0 measures it with a "
                                   "large device-to-device copy.", unit="GB/s", min=0.0)
    baseline: str = option("", "Model the speedups are relative to; empty means the first all-attention model.")
    plots: bool = option(True, "Write profile.png and profile.pdf (decode tokens/s vs batch, one panel per length).")
    figure_width: float = option(0.0, FIGURE_WIDTH_HELP, unit="in", min=0.0)

    def check(self) -> list[tuple[str, str]]:
        problems = []
        if not self.models:
            problems.append(("models", "empty; name at least one model, e.g. ['llama-3.2-1b', 'llamba-1b']"))
        for key in ("batch", "seqlen"):
            values = getattr(self, key)
            if not values:
                problems.append((key, "empty; give at least one size"))
        if self.baseline and self.baseline not in self.models:
            problems.append(("baseline", f"{self.baseline!r} is not one of models {self.models}"))
        if (problem := check_figure_width(self.figure_width)) is not None:
            problems.append(("figure_width", problem))
        problems += self._length_problems()
        if self.memory_cap:
            from thinkfast.profile.grid import parse_memory

            try:
                if parse_memory(self.memory_cap) <= 0:
                    problems.append(("memory_cap", f"{self.memory_cap!r} leaves no memory; give a limit such as "
                                                   f"'40G', or leave it empty for the device's memory"))
            except ValueError as exc:
                problems.append(("memory_cap", str(exc)))
        return problems

    def _length_problems(self) -> list[tuple[str, str]]:
        """Lengths ``seqlen`` cannot be split into as ``prompt_len`` / ``gen_len`` ask, named by the key that
        was given (``prompt_len`` when both were)."""
        from thinkfast.profile.grid import split_length

        key = "prompt_len" if self.prompt_len else "gen_len"
        problems = []
        for seqlen in sorted(set(self.seqlen)):
            try:
                split_length(seqlen, self.prompt_len, self.gen_len)
            except ValueError as exc:
                fix = "give lengths that add up to each seqlen, or only one of the two" if (
                    self.prompt_len and self.gen_len) else "give a smaller value or longer seqlen values"
                problems.append((key, f"{exc}; {fix}"))
        return problems
