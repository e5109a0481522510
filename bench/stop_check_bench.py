"""Host milliseconds of one engine check's stop rules over a full batch of real samples.

    python bench/stop_check_bench.py --samples runs/paper/seed0/gen/SmolLM2-135M-SFT/samples.jsonl \
        --tokenizer .models/smollm2-tokenizer

The engine checks every ``check_every`` steps whether any busy slot's newest tokens end its sample
(stop strings, the answer rule: :class:`thinkfast.generate.stops.StopChecker`), on the host, while the
device waits. This replays that check the way the engine makes it, over the samples of a generation
run (their texts re-tokenised): ``--slots`` slots, each sample growing by ``--check-every`` tokens per
check and keeping a :class:`~thinkfast.generate.stops.SlotMemory`; a sample leaves its slot when it
ends (its text runs out, as at an EOS) or when a rule fires, and the next sample of the run takes the
slot, so the batch stays full, with samples of every age, until the run's samples run out. Prints the
mean milliseconds per check. CPU only; a diagnosis tool for ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import time

from transformers import AutoTokenizer

from thinkfast.generate.stops import SlotMemory, StopChecker


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", required=True, help="a generation run's samples.jsonl (all of it is replayed)")
    p.add_argument("--tokenizer", required=True, help="tokenizer directory or hub id")
    p.add_argument("--slots", type=int, default=1024)
    p.add_argument("--check-every", type=int, default=16)
    p.add_argument("--answer-format", default="gsm8k")
    p.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    args = p.parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    with open(args.samples) as fh:
        texts = [json.loads(line)["text"] for line in fh]
    pending = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    pending.reverse()  # pop() takes the run's samples in order

    def decode(tokens) -> str:
        return tokenizer.decode(list(tokens), skip_special_tokens=True)

    checker = StopChecker(args.stop, decode, args.answer_format)
    slots: list[tuple[list[int], list[int], SlotMemory]] = []  # (sample, its tokens so far, memory)
    fired = checks = 0
    seconds = 0.0
    while pending or slots:
        while pending and len(slots) < args.slots:
            slots.append((pending.pop(), [], SlotMemory()))
        start = time.perf_counter()
        kept = []
        for sample, grown, memory in slots:
            checked = len(grown)
            grown.extend(sample[checked: checked + args.check_every])  # the engine's host copy of the slot
            if len(grown) == checked:
                continue  # the sample ended before this check
            if checker.first_stop(grown, checked, memory) is not None:
                fired += 1
            else:
                kept.append((sample, grown, memory))
        seconds += time.perf_counter() - start
        slots, checks = kept, checks + 1
    samples = len(texts)
    result = {"samples": samples, "checks": checks, "ms_per_check": 1e3 * seconds / max(checks, 1),
              "fired": fired}
    print(f"{samples} samples, {checks} checks: {result['ms_per_check']:.1f} ms per check "
          f"(mean); the rules fired for {fired} samples")
    return result


if __name__ == "__main__":
    main()
