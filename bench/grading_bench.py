"""Grading throughput (samples/s) of ``thinkfast evaluate`` on this machine's CPU cores.

Two workloads, cold cache (every verdict computed):

- ``gsm8k``: real GSM8K train solutions as samples, a third of them with a changed final number
  and some spelled ``$1,234`` or "The answer is N." (numbers: mostly the exact fast path);
- ``math``: boxed LaTeX answers (fractions, roots, decimals, expressions, some wrong, some
  garbage), every verdict through math-verify in the worker pool.

Usage: ``.venv/bin/python bench/grading_bench.py --problems 200 --samples 16 --workers 2 --out grading.json``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import time
from pathlib import Path

from thinkfast.evaluate.equivalence import EquivalencePool
from thinkfast.evaluate.grading import Grader
from thinkfast.evaluate.runs import ProblemSamples
from thinkfast.registry import get_registry

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k_train.jsonl"
MATH_ANSWERS = [("\\frac{1}{2}", ["0.5", "1/2", "\\frac{2}{4}", "\\frac{1}{3}", "2"]),
                ("\\sqrt{2}", ["\\sqrt{2}", "2^{1/2}", "1.414", "\\sqrt{3}", "\\frac{\\sqrt{8}}{2}"]),
                ("x^2+2x+1", ["(x+1)^2", "x^2+2x+1", "x^2+1", "(x-1)^2", "}}\\frac{"]),
                ("3\\pi", ["3\\pi", "\\pi \\cdot 3", "9.42", "6\\pi", "\\frac{6\\pi}{2}"])]


def gsm8k_problems(count: int, samples: int, rng: random.Random) -> list[ProblemSamples]:
    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[:count]]
    out = []
    for i, row in enumerate(rows):
        body, final = row["answer"].split("####")
        body, final = re.sub(r"<<[^>]*>>", "", body).strip(), final.strip().replace(",", "")
        texts = []
        for _ in range(samples):
            shown = final if rng.random() < 0.66 or not final.isdigit() else str(int(final) + rng.randint(1, 9))
            style = rng.random()
            ending = f"The answer is ${int(shown):,}." if style < 0.3 and shown.isdigit() else f"#### {shown}"
            texts.append(f"{body}\n{ending}")
        out.append(ProblemSamples(f"g{i}", "gsm8k", final, row["question"], texts, [0] * samples, [""] * samples))
    return out


def math_problems(count: int, samples: int, rng: random.Random) -> list[ProblemSamples]:
    out = []
    for i in range(count):
        gold, candidates = MATH_ANSWERS[i % len(MATH_ANSWERS)]
        salt = f"+{i}" if i >= len(MATH_ANSWERS) else ""  # distinct problems, distinct cache keys
        texts = [f"Working... so the result is $\\boxed{{{rng.choice(candidates)}{salt}}}$." for _ in range(samples)]
        out.append(ProblemSamples(f"m{i}", "math500", gold + salt, "", texts, [0] * samples, [""] * samples))
    return out


def run(name: str, problems: list[ProblemSamples], workers: int, timeout: float) -> dict:
    extractors = {n: get_registry().get("datasets", n)() for n in ("gsm8k", "math500")}
    with EquivalencePool(workers, timeout) as pool:
        grader = Grader(lambda ds, text: extractors[ds].extract_answer(text), pool)
        start = time.perf_counter()
        graded = grader.grade(problems)
        seconds = time.perf_counter() - start
    samples = sum(p.n for p in graded)
    return {"workload": name, "problems": len(graded), "samples": samples, "seconds": seconds,
            "samples_per_second": samples / seconds, "verdicts": dict(grader.counts),
            "accuracy": sum(p.correct.sum() for p in graded) / samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=None, help="Write the results as JSON here.")
    args = parser.parse_args()
    rng = random.Random(0)
    results = [run("gsm8k", gsm8k_problems(args.problems, args.samples, rng), args.workers, args.timeout),
               run("math", math_problems(args.problems, args.samples, rng), args.workers, args.timeout)]
    meta = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "workers": args.workers,
            "date": time.strftime("%Y-%m-%d")}
    print(f"{'workload':10} {'problems':>8} {'samples':>8} {'seconds':>8} {'samples/s':>10}  verdicts")
    for r in results:
        print(f"{r['workload']:10} {r['problems']:8d} {r['samples']:8d} {r['seconds']:8.2f} "
              f"{r['samples_per_second']:10.0f}  {r['verdicts']}")
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
