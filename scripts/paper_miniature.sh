#!/usr/bin/env bash
# The paper's result in miniature (docs/results.md): SmolLM2-135M-Instruct fine-tuned on GSM8K (the teacher),
# distilled into a pure (Llamba) and a hybrid (MambaInLlama, 25% attention) student; n = 64 samples on 500
# held-out GSM8K problems per model; coverage and majority accuracy vs k and vs seconds.
#
#   scripts/paper_miniature.sh PHASE[,PHASE...] [SEED]
#
# Phases, in pipeline order (each prints its wall time, appends it to <run root>/phases.tsv, and is
# restartable: a finished phase is skipped, an interrupted distill resumes from its last checkpoint, an
# interrupted generate from the samples already written):
#   stage            HERE, not on the device: copy GSM8K train into .data/, split the GGUF into .xfer1/part and
#                    .xfer2/part (< 50 MB each, so each fits one device call's 64 MiB carry), print sha256s
#   assemble         on the device: rebuild .models/SmolLM2-135M-Instruct.Q4_1.gguf from both parts, check sha256
#   sft              teacher: recipes/paper/teacher_sft.toml            -> <root>/teacher-sft/student
#   pure             Llamba: recipes/paper/pure_llamba.toml             -> <root>/llamba/student
#   hybrid           MambaInLlama: recipes/paper/hybrid_mambainllama.toml -> <root>/mambainllama/student
#   probe            decode tokens/s of the three models over batch sizes (thinkfast profile) -> batch per model
#   generate         generate-teacher, generate-pure, generate-hybrid (recipes/paper/generate.toml)
#   evaluate         recipes/paper/evaluate.toml over the three generation runs -> <root>/eval
#   collect          report.json, plots and two tarballs (small artifacts; samples) into $OUT (max 8 files)
#   all-device       assemble,sft,pure,hybrid,probe,generate,evaluate,collect
#   status           what is done for this seed (models, generation runs, report)
# Phases given as a comma-separated list run in order; if one fails or runs out of CALL_BUDGET, the rest are
# skipped except a final `collect`, and the script exits with that phase's status (75: out of time, resumable).
#
# Environment:
#   SEED (or the 2nd argument)  seed of every phase (data order, init, sampling); outputs in runs/paper/seed<SEED>
#   MODEL_SEED     generate/evaluate use the models of this seed (default SEED); with MODEL_SEED != SEED only
#                  the sampling seed varies, outputs in runs/paper/seed<SEED>-models<MODEL_SEED>
#   RUNS           root of all run directories (default runs/paper)
#   TOY=1          CPU dry run: one step per stage on 8 problems, n = 4, 32 new tokens (tests/test_paper_recipes.py)
#   TOY_TEACHER    with TOY=1: start from this (tiny) HF Llama directory instead of the GGUF (seconds, not minutes)
#   BUDGET_SCALE   multiply every distill stage's token budget (e.g. 0.5 if training runs slower than planned)
#   CALL_BUDGET    seconds this invocation may take (e.g. 520 for a 540 s device call): a distill, profile or
#                  generate command still running at the deadline is interrupted (SIGINT; checkpoints and
#                  written samples stay), later phases are skipped, `collect` still runs if it was asked for,
#                  and the same command resumes the work on the next call
#   BATCH_TEACHER, BATCH_PURE, BATCH_HYBRID   decode slots per model (default: the probe's pick, else 1024)
#   PROBE_BATCHES  batch sizes the probe measures (default 256,512,1024,2048,4096)
#   STATE_DTYPE    generate with this SSM state dtype (float32, bfloat16) instead of the recipe's; outputs in
#                  <the generation root>-state<STATE_DTYPE>, so it runs beside the recipe's generation
#   PAPER_WORKDIR  directory the relative paths (.data, .models, .xfer*, runs) live in (default: repo root)
#   PYTHON         interpreter (default .venv/bin/python if present, else python3)
#   GSM8K_SRC      GSM8K train jsonl for `stage` (default ../shared/data/gsm8k_train.jsonl)
#   OUT            where `collect` writes (the device sets it; default <root>/collect)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${PAPER_WORKDIR:-$REPO}"
RECIPES="$REPO/recipes/paper"
HELPER="$REPO/scripts/paper_helper.py"
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
TF=("$PYTHON" -m thinkfast)
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"

PHASES="${1:?usage: scripts/paper_miniature.sh PHASE[,PHASE...] [SEED]  (phases: see the header of this file)}"
SEED="${2:-${SEED:-0}}"
MODEL_SEED="${MODEL_SEED:-$SEED}"
RUNS="${RUNS:-runs/paper}"
MODELS_ROOT="$RUNS/seed$MODEL_SEED"                 # distill outputs
if [ "$MODEL_SEED" = "$SEED" ]; then GEN_ROOT="$MODELS_ROOT"; else GEN_ROOT="$RUNS/seed$SEED-models$MODEL_SEED"; fi
STATE_DTYPE="${STATE_DTYPE:-}"
if [ -n "$STATE_DTYPE" ]; then GEN_ROOT="$GEN_ROOT-state$STATE_DTYPE"; fi
GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF=".models/$GGUF_NAME"
DATA=".data/gsm8k_train.jsonl"
DATA_LINES=7473
GSM8K_SRC="${GSM8K_SRC:-$REPO/../shared/data/gsm8k_train.jsonl}"
GGUF_SRC="${GGUF_SRC:-$REPO/.models/$GGUF_NAME}"
MAX_PART_BYTES=50000000
# generation run directories: their names are the labels in the report and the plots
LABEL_TEACHER="SmolLM2-135M-SFT"
LABEL_PURE="Llamba-135M"
LABEL_HYBRID="MambaInLlama-135M-attn25"

log() { printf '[paper %s] %s\n' "$(date -u +%H:%M:%S)" "$*"; }
die() { printf '[paper] error: %s\n' "$*" >&2; exit 2; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
card() { nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true; }

START_S=$(date +%s)
COLLECT_RESERVE_S=20   # kept back from CALL_BUDGET for a final `collect` (it took ~10 s on the card)

# Seconds left before the CALL_BUDGET deadline (a large number without a budget).
seconds_left() {
  if [ -z "${CALL_BUDGET:-}" ]; then echo 999999; return; fi
  echo $(( START_S + CALL_BUDGET - COLLECT_RESERVE_S - $(date +%s) ))
}

# Run a long command until the CALL_BUDGET deadline (SIGINT, then SIGKILL 30 s later). Returns its status,
# or 75 when the deadline stopped it (the phase is incomplete and resumes when run again).
run_limited() {
  local left rc=0
  left=$(seconds_left)
  [ "$left" -gt 10 ] || { log "out of CALL_BUDGET before $2 $3 started; run the same command again"; return 75; }
  timeout --signal=INT --kill-after=30 "$left" "$@" || rc=$?
  if [ "$rc" = 124 ] || [ "$rc" = 130 ] || [ "$rc" = 137 ]; then
    log "stopped at the CALL_BUDGET deadline; run the same phase again to resume"; return 75
  fi
  return "$rc"
}

# --set arguments that shrink (TOY=1) or scale (BUDGET_SCALE) a distill recipe's stages
stage_sets() {
  local args=()
  [ "${TOY:-0}" = 1 ] && args+=(--toy)
  [ -n "${BUDGET_SCALE:-}" ] && args+=(--scale "$BUDGET_SCALE")
  [ ${#args[@]} -gt 0 ] || return 0
  "$PYTHON" "$HELPER" overrides "$1" "${args[@]}"
}

phase_stage() {
  [ -f "$GSM8K_SRC" ] || die "GSM8K train file $GSM8K_SRC not found; set GSM8K_SRC to gsm8k_train.jsonl"
  [ -f "$GGUF_SRC" ] || die "$GGUF_SRC not found; run \`make teacher\` (or set GGUF_SRC)"
  local lines; lines=$(wc -l < "$GSM8K_SRC")
  [ "$lines" -eq "$DATA_LINES" ] || die "$GSM8K_SRC has $lines lines, expected $DATA_LINES (GSM8K train)"
  mkdir -p .data .xfer1 .xfer2
  [ "$(realpath "$GSM8K_SRC")" = "$(realpath -m "$DATA")" ] || cp "$GSM8K_SRC" "$DATA"
  local size half
  size=$(stat -c %s "$GGUF_SRC"); half=$(( (size + 1) / 2 ))
  head -c "$half" "$GGUF_SRC" > .xfer1/part
  tail -c +"$((half + 1))" "$GGUF_SRC" > .xfer2/part
  local digest; digest=$(sha "$GGUF_SRC")
  for d in .xfer1 .xfer2; do
    echo "$digest  $GGUF_NAME" > "$d/gguf.sha256"
    [ "$(stat -c %s "$d/part")" -lt "$MAX_PART_BYTES" ] || die "$d/part is not below $MAX_PART_BYTES bytes"
  done
  log "GGUF $GGUF_SRC: $size bytes, sha256 $digest"
  log ".xfer1/part $(stat -c %s .xfer1/part) bytes, .xfer2/part $(stat -c %s .xfer2/part) bytes"
  log "$DATA: $lines lines, sha256 $(sha "$DATA")"
  local tree; tree=$(git -C "$REPO" ls-files -co --exclude-standard -z 2>/dev/null | (cd "$REPO" && xargs -0 du -cb 2>/dev/null) | tail -1 | cut -f1)
  log "device calls carry [.gpu], then [.xfer1, .data], then [.xfer2] (see docs/results.md); with the tree:"
  local call size
  for call in "$REPO/.gpu" ".xfer1 .data" ".xfer2"; do
    # shellcheck disable=SC2086
    size=$(( $(du -cb $call 2>/dev/null | tail -1 | cut -f1) + ${tree:-0} ))
    log "  [$call]: $(( size / 1048576 )) MiB$( [ "$size" -lt $((64 * 1048576)) ] || echo ' -- OVER the 64 MiB a call may carry')"
  done
}

phase_assemble() {
  local digest
  if [ -f .xfer1/gguf.sha256 ]; then digest=$(cut -d' ' -f1 .xfer1/gguf.sha256)
  elif [ -f .xfer2/gguf.sha256 ]; then digest=$(cut -d' ' -f1 .xfer2/gguf.sha256)
  fi
  if [ -f "$GGUF" ] && { [ -z "${digest:-}" ] || [ "$(sha "$GGUF")" = "$digest" ]; }; then
    log "skip: $GGUF is present${digest:+ (sha256 verified)}"; return 0
  fi
  [ -f .xfer1/part ] && [ -f .xfer2/part ] || die "assemble needs .xfer1/part and .xfer2/part (missing: $(
    for d in .xfer1 .xfer2; do [ -f "$d/part" ] || printf '%s/part ' "$d"; done)); carry them in earlier calls"
  mkdir -p .models
  cat .xfer1/part .xfer2/part > "$GGUF.tmp"
  [ "$(sha "$GGUF.tmp")" = "$digest" ] || { rm -f "$GGUF.tmp"; die "reassembled GGUF sha256 differs from $digest"; }
  mv "$GGUF.tmp" "$GGUF"
  log "$GGUF reassembled, sha256 $digest"
}

# distill RECIPE OUTDIR [--set ...]: skip when the student exists, resume from a checkpoint if there is one
distill() {
  local recipe="$1" out="$2"; shift 2
  if [ -f "$out/student/model.safetensors" ]; then log "skip: $out/student exists"; return 0; fi
  local sets=() resume=()
  mapfile -t sets < <(stage_sets "$recipe")
  [ -f "$out/checkpoints/latest" ] && resume=(--resume) && log "resuming $out from its last checkpoint"
  run_limited "${TF[@]}" distill "$recipe" -o "$out" --no-progress --set "run.seed=$SEED" \
    "${sets[@]}" "$@" "${resume[@]}"
}

need_dir() { [ -f "$1/config.json" ] || die "$1 is missing: run the $2 phase first (seed $3)"; }

phase_sft() {
  [ -f "$DATA" ] || die "$DATA is missing: run 'stage' here and carry .data to the device"
  local teacher=()
  if [ "${TOY:-0}" = 1 ] && [ -n "${TOY_TEACHER:-}" ]; then teacher=(--set "teacher.model=$TOY_TEACHER")
  else [ -f "$GGUF" ] || phase_assemble
  fi
  distill "$RECIPES/teacher_sft.toml" "$MODELS_ROOT/teacher-sft" "${teacher[@]}"
}

phase_student() {  # $1 = recipe file name, $2 = output dir name
  local teacher="$MODELS_ROOT/teacher-sft/student"
  need_dir "$teacher" "'sft'" "$MODEL_SEED"
  distill "$RECIPES/$1" "$MODELS_ROOT/$2" --set "teacher.model=$teacher"
}

model_dir() {  # label -> student directory
  case "$1" in
    "$LABEL_TEACHER") echo "$MODELS_ROOT/teacher-sft/student" ;;
    "$LABEL_PURE") echo "$MODELS_ROOT/llamba/student" ;;
    "$LABEL_HYBRID") echo "$MODELS_ROOT/mambainllama/student" ;;
  esac
}

phase_probe() {
  local dir="$GEN_ROOT/probe"
  if [ -f "$dir/batch_sizes.txt" ]; then log "skip: $dir/batch_sizes.txt exists"; cat "$dir/batch_sizes.txt"; return 0; fi
  mkdir -p "$dir/models"
  local models=() label
  for label in "$LABEL_TEACHER" "$LABEL_PURE" "$LABEL_HYBRID"; do
    need_dir "$(model_dir "$label")" "'sft'/'pure'/'hybrid'" "$MODEL_SEED"
    ln -sfn "$(realpath "$(model_dir "$label")")" "$dir/models/$label"   # profile names a model by its dir
    models+=("$dir/models/$label")
  done
  local grid=(--batch "${PROBE_BATCHES:-256,512,1024,2048,4096}" --seqlen 576 --prompt-len 320 --warmup 1 --repeats 3 --decode-points 3)
  [ "${TOY:-0}" = 1 ] && grid=(--batch 2,4 --seqlen 48 --prompt-len 16 --warmup 0 --repeats 1 --decode-points 1)
  local state=()
  if [ -n "$STATE_DTYPE" ]; then state=(--set "profile.state_dtype=\"$STATE_DTYPE\""); fi
  # --compile: the decode step the probe times is the one generate runs (compiled, fused projections)
  run_limited "${TF[@]}" profile --models "$(IFS=,; echo "${models[*]}")" "${grid[@]}" --compile --no-plots \
    "${state[@]}" -o "$dir"
  "$PYTHON" "$HELPER" batch-sizes "$dir/profile.json" 1024 > "$dir/batch_sizes.txt"
  log "batch sizes (decode slots):"; cat "$dir/batch_sizes.txt"
}

batch_for() {  # label env_override -> batch size
  if [ -n "$2" ]; then echo "$2"; return; fi
  if [ "${TOY:-0}" = 1 ]; then echo 8; return; fi
  local probed="$GEN_ROOT/probe/batch_sizes.txt"
  if [ -f "$probed" ] && grep -q "^$1 " "$probed"; then grep "^$1 " "$probed" | cut -d' ' -f2; else echo 1024; fi
}

generate_one() {  # label batch_override
  local label="$1" model out batch
  model="$(model_dir "$label")"; out="$GEN_ROOT/gen/$label"
  need_dir "$model" "'sft'/'pure'/'hybrid'" "$MODEL_SEED"
  if [ -f "$out/run.json" ] && grep -q '"status": *"complete"' "$out/run.json"; then
    log "skip: $out is complete"; return 0
  fi
  batch="$(batch_for "$label" "$2")"
  local toy=()
  [ "${TOY:-0}" = 1 ] && toy=(--limit 8 --n 4 --max-new-tokens 32)
  log "generate $label: batch $batch -> $out"
  local state=()
  if [ -n "$STATE_DTYPE" ]; then state=(--state-dtype "$STATE_DTYPE"); fi
  run_limited "${TF[@]}" generate "$RECIPES/generate.toml" --model "$model" --batch-size "$batch" --seed "$SEED" \
    "${state[@]}" "${toy[@]}" -o "$out"
}

phase_evaluate() {
  local runs=() label
  for label in "$LABEL_TEACHER" "$LABEL_PURE" "$LABEL_HYBRID"; do
    [ -f "$GEN_ROOT/gen/$label/run.json" ] || die "$GEN_ROOT/gen/$label has no run.json: run generate first"
    runs+=(--runs "$GEN_ROOT/gen/$label")
  done
  local toy=()
  [ "${TOY:-0}" = 1 ] && toy=(--set evaluate.workers=1 --set evaluate.bootstrap=50 --set evaluate.subsets=5)
  mkdir -p "$GEN_ROOT/eval"
  "${TF[@]}" evaluate "$RECIPES/evaluate.toml" "${runs[@]}" --set "run.seed=$SEED" "${toy[@]}" \
    -o "$GEN_ROOT/eval" | tee "$GEN_ROOT/eval/table.txt"
}

phase_collect() {
  local dest="${OUT:-$GEN_ROOT/collect}" tag
  tag="$(basename "$GEN_ROOT")"  # seed<S>[-models<M>][-state<dtype>]
  [ -d "$RUNS" ] || die "$RUNS does not exist: nothing to collect"
  mkdir -p "$dest"
  if [ -f "$GEN_ROOT/eval/report.json" ]; then cp "$GEN_ROOT/eval/report.json" "$dest/report-$tag.json"
  else log "no $GEN_ROOT/eval/report.json yet: collecting what exists"
  fi
  local png
  for png in "$GEN_ROOT"/eval/*.png; do [ -f "$png" ] && cp "$png" "$dest/$tag-$(basename "$png")"; done
  # small artifacts: metrics, run.json, resolved recipes, profile, the table, the phase log, the PDF plots
  (cd "$RUNS" && find "seed$MODEL_SEED" "$(basename "$GEN_ROOT")" -maxdepth 4 \
      \( -name metrics.jsonl -o -name run.json -o -name recipe.toml -o -name 'profile.json' \
         -o -name batch_sizes.txt -o -name table.txt -o -name report.json -o -name phases.tsv \
         -o -name '*.pdf' \) -print0 2>/dev/null \
     | sort -zu | tar --null -czf "$dest/artifacts-$tag.tar.gz" -T -)
  if [ -d "$GEN_ROOT/gen" ]; then  # xz if the machine has it (about 2x smaller than gzip on samples)
    local zip=z ext=gz
    command -v xz >/dev/null && zip=J ext=xz
    (cd "$GEN_ROOT" && find gen -name samples.jsonl -print0 \
       | XZ_OPT=-T0 tar --null -c${zip}f "$dest/samples-$tag.tar.$ext" -T -)
  fi
  local f
  for f in "$dest"/*; do
    if [ "$(stat -c %s "$f")" -ge $((16 * 1024 * 1024)) ]; then log "dropping $f: over 16 MiB"; rm -f "$f"; fi
  done
  log "collected into $dest:"; ls -l "$dest"
}

phase_status() {
  local label dir
  log "seed $SEED (models of seed $MODEL_SEED) under $RUNS; card: $(card)"
  for dir in teacher-sft llamba mambainllama; do
    if [ -f "$MODELS_ROOT/$dir/student/model.safetensors" ]; then log "  $dir: student done"
    elif [ -f "$MODELS_ROOT/$dir/checkpoints/latest" ]; then log "  $dir: checkpoint $(cat "$MODELS_ROOT/$dir/checkpoints/latest")"
    else log "  $dir: not started"
    fi
  done
  for label in "$LABEL_TEACHER" "$LABEL_PURE" "$LABEL_HYBRID"; do
    dir="$GEN_ROOT/gen/$label"
    if [ -f "$dir/samples.jsonl" ]; then log "  gen $label: $(wc -l < "$dir/samples.jsonl") samples$(
      grep -q '"status": *"complete"' "$dir/run.json" 2>/dev/null && echo ', complete')"
    else log "  gen $label: not started"
    fi
  done
  [ -f "$GEN_ROOT/eval/report.json" ] && log "  eval: report.json written" || log "  eval: not yet"
  [ -f "$GEN_ROOT/phases.tsv" ] && cat "$GEN_ROOT/phases.tsv"
  return 0
}

run_phase() {
  case "$1" in
    status) phase_status ;;
    stage) phase_stage ;;
    assemble) phase_assemble ;;
    sft) phase_sft ;;
    pure) phase_student pure_llamba.toml llamba ;;
    hybrid) phase_student hybrid_mambainllama.toml mambainllama ;;
    probe) phase_probe ;;
    generate-teacher) generate_one "$LABEL_TEACHER" "${BATCH_TEACHER:-}" ;;
    generate-pure) generate_one "$LABEL_PURE" "${BATCH_PURE:-}" ;;
    generate-hybrid) generate_one "$LABEL_HYBRID" "${BATCH_HYBRID:-}" ;;
    generate) run_phase generate-teacher; run_phase generate-pure; run_phase generate-hybrid ;;
    evaluate) phase_evaluate ;;
    collect) phase_collect ;;
    *) die "unknown phase '$1'; phases: stage assemble sft pure hybrid probe generate generate-teacher" \
           "generate-pure generate-hybrid evaluate collect all-device status" ;;
  esac
}

timed() {
  local start rc=0 seconds
  start=$(date +%s%N)
  log "phase $1 (seed $SEED${TOY:+, TOY=$TOY}) starts"
  set +e
  ( set -e; run_phase "$1" )   # a subshell: an error (or `die`) ends this phase only
  rc=$?
  set -e
  seconds=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  local status=done; [ "$rc" = 0 ] || status="rc=$rc"
  log "phase $1: $status in $seconds s"
  if [ "$1" != stage ] && [ "$1" != status ]; then
    mkdir -p "$GEN_ROOT"
    printf '%s\t%s\tseed%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$1" "$SEED" "$seconds" "$status" "$(card)" \
      >> "$GEN_ROOT/phases.tsv"
  fi
  return "$rc"
}

PHASES="${PHASES//all-device/assemble,sft,pure,hybrid,probe,generate,evaluate,collect}"
IFS=, read -r -a PHASE_LIST <<< "$PHASES"
for phase in "${PHASE_LIST[@]}"; do
  case "$phase" in
    stage|assemble|sft|pure|hybrid|probe|generate|generate-teacher|generate-pure|generate-hybrid|evaluate|collect|status) ;;
    *) die "unknown phase '$phase'; phases: stage assemble sft pure hybrid probe generate generate-teacher" \
           "generate-pure generate-hybrid evaluate collect all-device status" ;;
  esac
done
FAILED=0
for phase in "${PHASE_LIST[@]}"; do
  if [ "$FAILED" != 0 ] && [ "$phase" != collect ]; then log "skipping $phase (an earlier phase stopped)"; continue; fi
  rc=0; timed "$phase" || rc=$?
  [ "$FAILED" != 0 ] || FAILED=$rc
done
exit "$FAILED"
