#!/usr/bin/env bash
# The offline main job, end to end on CPU (what `make demo` runs once .venv and the teacher exist):
#   1. distill the quickstart recipe (TEACHER, by default the SmolLM2-135M-Instruct GGUF, into a
#      hybrid Mamba student), then print the loss of every step per stage and fail if a stage's
#      loss did not fall;
#   2. sample LIMIT problems x N answers (at most MAX_NEW_TOKENS tokens each) from the student
#      and from the teacher;
#   3. grade both runs (report.json, summary table, PNG plots);
#   4. print where the outputs are and how long each step took (wall seconds).
#
# Settings come from the environment (defaults in brackets):
#   BIN [.venv/bin]  OUT [runs/demo]  RECIPE [recipes/quickstart.toml]
#   TEACHER [.models/SmolLM2-135M-Instruct.Q4_1.gguf]  DATASET [synthetic-arith]
#   LIMIT [8] problems, N [4] samples per problem, MAX_NEW_TOKENS [64], BATCH_SIZE [32]
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-.venv/bin}
OUT=${OUT:-runs/demo}
RECIPE=${RECIPE:-recipes/quickstart.toml}
TEACHER=${TEACHER:-.models/SmolLM2-135M-Instruct.Q4_1.gguf}
DATASET=${DATASET:-synthetic-arith}
LIMIT=${LIMIT:-8}
N=${N:-4}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-64}
BATCH_SIZE=${BATCH_SIZE:-32}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
export TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}

if [[ "$TEACHER" == *.gguf && ! -f "$TEACHER" ]]; then
    echo "demo: teacher $TEACHER is missing: run \`make teacher\` (or set TEACHER=<.gguf, HF dir or hub id>)" >&2
    exit 2
fi

# now: wall-clock seconds (bash 5 has EPOCHREALTIME, whose decimal mark follows the locale).
now() {
    local t=${EPOCHREALTIME:-$(date +%s)}
    echo "${t/,/.}"
}
# elapsed START END: END - START in seconds, one decimal.
elapsed() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'
}

STEP_NAMES=()
STEP_SECONDS=()
# step NAME COMMAND...: run COMMAND under a banner and record its wall time.
step() {
    local name=$1 start end
    shift
    printf '\n==> %s: %s\n' "$name" "$*"
    start=$(now)
    "$@"
    end=$(now)
    STEP_NAMES+=("$name")
    STEP_SECONDS+=("$(elapsed "$start" "$end")")
}

demo_start=$(now)
rm -rf "$OUT"
teacher=(--set "teacher.model=\"$TEACHER\"")
step "validate recipe" "$BIN/thinkfast" recipe validate "$RECIPE" "${teacher[@]}"
step "distill" "$BIN/thinkfast" distill "$RECIPE" "${teacher[@]}" -o "$OUT"
step "loss per step" "$BIN/python" - "$OUT/metrics.jsonl" <<'PY'
"""Print each stage's loss per step from metrics.jsonl; exit 1 if a stage's last loss is not below its first."""
import sys
from pathlib import Path

from thinkfast.distill.metrics import read_metrics

stages: dict[str, list[dict]] = {}
for record in read_metrics(Path(sys.argv[1])):
    stages.setdefault(f"{record['stage']} ({record['kind']})", []).append(record)
flat = []
for label, records in stages.items():
    losses = [r["loss"] for r in records]
    print(f"{label:>16}: " + " ".join(f"{x:.3g}" for x in losses))
    print(f"{'':>16}  {losses[0]:.4g} -> {losses[-1]:.4g} over {len(losses)} steps ({records[-1]['elapsed_s']:.0f} s)")
    if not losses[-1] < losses[0]:
        flat.append(label)
if flat:
    sys.exit(f"demo: the loss did not fall in stage(s) {', '.join(flat)}")
PY
generate=(--dataset "$DATASET" --split test --limit "$LIMIT" --n "$N" --max-new-tokens "$MAX_NEW_TOKENS"
          --batch-size "$BATCH_SIZE" --device cpu)
step "generate (student)" "$BIN/thinkfast" generate --model "$OUT/student" "${generate[@]}" -o "$OUT/generate/student"
step "generate (teacher)" "$BIN/thinkfast" generate --model "$TEACHER" "${generate[@]}" -o "$OUT/generate/teacher"
step "evaluate" "$BIN/thinkfast" evaluate --runs "$OUT/generate/teacher" --runs "$OUT/generate/student" \
    -o "$OUT/evaluate"
demo_end=$(now)

printf '\n==> outputs\n'
printf '  %-22s %s\n' \
    "student model" "$OUT/student/" \
    "training log" "$OUT/metrics.jsonl" \
    "checkpoints" "$OUT/checkpoints/" \
    "student samples" "$OUT/generate/student/samples.jsonl (+ run.json)" \
    "teacher samples" "$OUT/generate/teacher/samples.jsonl (+ run.json)" \
    "report" "$OUT/evaluate/report.json" \
    "plots" "$OUT/evaluate/*.png, *.pdf"
printf '\n==> wall time per step (s)\n'
for i in "${!STEP_NAMES[@]}"; do
    printf '  %-22s %7s\n' "${STEP_NAMES[$i]}" "${STEP_SECONDS[$i]}"
done
printf '  %-22s %7s\n' "total" "$(elapsed "$demo_start" "$demo_end")"
