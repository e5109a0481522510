"""Host milliseconds of one engine check's stop rules over a full batch of real samples.

    python bench/stop_check_bench.py --samples runs/paper/seed0/gen/SmolLM2-135M-SFT/samples.jsonl \
        --tokenizer .models/smollm2-tokenizer

The engine checks every ``check_every`` steps whether any busy slot's newest tokens end its sample
(stop strings, the answer rule: :class:`thinkfast.generate.stops.StopChecker`), on the host, while the
device waits. This replays that check for ``--slots`` samples of a generation run (their texts
re-tokenised), as they grow by ``--check-every`` tokens per check; a sample leaves the batch when it
ends (its text runs out, as at an EOS) or when the rule fires. Prints the mean milliseconds per check.
CPU only; a diagnosis tool for ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import time

from transformers import AutoTokenizer

from thinkfast.generate.stops import StopChecker


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", required=True, help="a generation run's samples.jsonl")
    p.add_argument("--tokenizer", required=True, help="tokenizer directory or hub id")
    p.add_argument("--slots", type=int, default=1024)
    p.add_argument("--check-every", type=int, default=16)
    p.add_argument("--answer-format", default="gsm8k")
    p.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    args = p.parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    texts = []
    with open(args.samples) as fh:
        for line in fh:
            texts.append(json.loads(line)["text"])
            if len(texts) == args.slots:
                break
    samples = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def decode(tokens) -> str:
        return tokenizer.decode(list(tokens), skip_special_tokens=True)

    checker = StopChecker(args.stop, decode, args.answer_format)
    live, fired, checks, seconds = list(range(len(samples))), 0, 0, 0.0
    checked = 0
    while live:
        start = time.perf_counter()
        keep = []
        for i in live:
            tokens = samples[i][: checked + args.check_every]
            if len(tokens) <= checked:
                continue  # the sample ended before this check
            if checker.first_stop(tokens, checked) is not None:
                fired += 1
            else:
                keep.append(i)
        seconds += time.perf_counter() - start
        live, checked, checks = keep, checked + args.check_every, checks + 1
    result = {"samples": len(samples), "checks": checks, "ms_per_check": 1e3 * seconds / max(checks, 1),
              "fired": fired}
    print(f"{len(samples)} samples, {checks} checks: {result['ms_per_check']:.1f} ms per check "
          f"(mean); the rules fired for {fired} samples")
    return result


if __name__ == "__main__":
    main()
