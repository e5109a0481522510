"""Helpers of ``scripts/paper_miniature.sh`` (the paper's result in miniature, docs/results.md).

Subcommands:

``overrides RECIPE [--toy] [--scale X]``
    Print, one per line, the ``--set`` arguments that rewrite the recipe's ``[[distill.stages]]``
    list: ``--toy`` shrinks every stage to one optimizer step on 8 problems with short rows (a CPU
    dry run of the real pipeline); ``--scale X`` multiplies every stage's budget (``tokens``, or
    ``steps`` when it is set) by X, e.g. 0.5 when the card trains slower than the recipe assumes.
    ``--set`` replaces a list as a whole, so the whole (edited) list is written as one TOML value.

``batch-sizes PROFILE_JSON DEFAULT``
    From a ``thinkfast profile`` run over the three models, print ``label batch`` lines: per model
    the smallest batch whose decode tokens/s is within ``--tolerance`` (default 5%) of the best one
    it reached (a larger batch than that buys no throughput but lengthens the tail of a generation
    run). Models without a successful cell get DEFAULT.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from thinkfast.config.loader import read_with_includes

#: Toy shapes per stage kind: (seq_len in tokens, batch_size in rows). kd/sft rows must hold a whole
#: GSM8K prompt (at most ~290 tokens with the chat template) plus some response, or the first batch
#: carries no loss tokens.
TOY_SHAPES = {"matrix": (64, 1), "hidden": (64, 1), "kd": (320, 1), "sft": (320, 1)}
TOY_PROBLEMS = 8


def toml_value(value: Any) -> str:
    """``value`` as a one-line TOML value (inline tables and arrays), as ``--set`` parses it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as TOML")


def toy_stage(stage: dict[str, Any]) -> dict[str, Any]:
    """``stage`` cut down to one optimizer step of one short row on the first few problems."""
    seq_len, batch_size = TOY_SHAPES[stage.get("kind", "kd")]
    data = dict(stage.get("data", {}))
    data["limit"] = min(int(data.get("limit", 0)) or TOY_PROBLEMS, TOY_PROBLEMS)
    return {**stage, "steps": 1, "tokens": 0, "seq_len": seq_len, "batch_size": batch_size, "grad_accum": 1,
            "warmup_steps": 0, "checkpoint_every": 0, "log_every": 1, "data": data}


def scaled_stage(stage: dict[str, Any], scale: float) -> dict[str, Any]:
    """``stage`` with its budget (``steps`` if set, else ``tokens``) multiplied by ``scale`` (at least 1 step)."""
    if stage.get("steps"):
        return {**stage, "steps": max(math.ceil(stage["steps"] * scale), 1)}
    if stage.get("tokens"):
        return {**stage, "tokens": max(int(stage["tokens"] * scale), 1)}
    return stage


def stage_overrides(recipe: Path, toy: bool, scale: float) -> list[str]:
    """The ``--set`` arguments (``--set`` and its value alternate) for ``recipe``'s stages; none if unchanged."""
    stages = read_with_includes(recipe).get("distill", {}).get("stages", [])
    if not stages or (not toy and scale == 1.0):
        return []
    if toy:
        stages = [toy_stage(s) for s in stages]
    elif scale != 1.0:
        stages = [scaled_stage(s, scale) for s in stages]
    return ["--set", f"distill.stages={toml_value(stages)}"]


def pick_batch_sizes(profile: dict[str, Any], tolerance: float) -> dict[str, int]:
    """``label -> batch``: the smallest batch within ``tolerance`` of the model's best decode tokens/s."""
    best: dict[str, list[tuple[int, float]]] = {}
    for cell in profile.get("cells", []):
        if cell.get("status") == "ok" and cell.get("decode_tokens_per_s"):
            best.setdefault(cell["model"], []).append((int(cell["batch"]), float(cell["decode_tokens_per_s"])))
    chosen = {}
    for model, cells in best.items():
        top = max(tps for _, tps in cells)
        chosen[model] = min(batch for batch, tps in cells if tps >= (1.0 - tolerance) * top)
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ov = sub.add_parser("overrides", help="--set arguments for a recipe's stages")
    ov.add_argument("recipe", type=Path)
    ov.add_argument("--toy", action="store_true", help="one step per stage on 8 problems (CPU dry run)")
    ov.add_argument("--scale", type=float, default=1.0, help="multiply every stage's token/step budget")
    bs = sub.add_parser("batch-sizes", help="batch size per model from profile.json")
    bs.add_argument("profile", type=Path)
    bs.add_argument("default", type=int)
    bs.add_argument("--tolerance", type=float, default=0.05, help="fraction of the best tokens/s to give up")
    args = parser.parse_args(argv)

    if args.command == "overrides":
        if args.scale <= 0:
            parser.error(f"--scale must be positive, got {args.scale}")
        print("\n".join(stage_overrides(args.recipe, args.toy, args.scale)))
        return 0
    profile = json.loads(args.profile.read_text()) if args.profile.is_file() else {}
    chosen = pick_batch_sizes(profile, args.tolerance)
    labels = profile.get("settings", {}).get("models", []) or list(chosen)
    for label in labels:
        name = Path(label).name
        print(name, chosen.get(name, args.default))
    return 0


if __name__ == "__main__":
    sys.exit(main())
