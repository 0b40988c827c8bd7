#!/usr/bin/env bash
# Eager against compiled client-batched rounds on a GPU (issue 34: the compiled step as the lever for
# the host-bound engine). One command on the device tool's machine, after `sweep.sh pack` here:
#
#     bash rolora/lab/gpu/sweep.sh pack                       # here: .gpu/ (data, MiniLM bf16, wheels)
#     OUT=DIR bash rolora/lab/gpu/compile_check.sh --quick    # there: under 5 minutes
#
# Rows (`rolora bench llm`, each in its own process): ours-fast (eager) and ours-compiled with
# train.compile = reduce-overhead (inductor + CUDA graphs), MiniLM-L6 on Rotten Tomatoes, 50 clients ×
# STEPS local steps × batch 32, bf16 base, fedavg-lora, one pass per client step (batch_tokens 65536),
# ROUNDS rounds each: round 1 holds the compile, the later rounds the speed. --quick: STEPS 4,
# ROUNDS 3; without it: STEPS 20 (the clients-paper setting), ROUNDS 3. Writes $OUT/compile.log and
# $OUT/compile.json; the last line compares the later rounds' medians.
set -uo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
source rolora/lab/gpu/env.sh
OUT=${OUT:-$PWD/gpu-compile-out}
PY=${PYTHON:-python3}
STEPS=20 ROUNDS=3
[ "${1:-}" = "--quick" ] && STEPS=4
mkdir -p "$OUT"
gpu_env "$PY" || exit 1
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  "$PY" -c "import sys, torch, transformers; print('python', sys.version.split()[0], '| torch', torch.__version__,
      '| cuda', torch.version.cuda, '| transformers', transformers.__version__)"
  timeout --kill-after=10 "${ROLORA_GPU_BUDGET:-270}" "$PY" -m rolora bench llm --rows ours-fast,ours-compiled \
    --compile "${ROLORA_COMPILE_MODE:-reduce-overhead}" --clients 50 --steps "$STEPS" --rounds "$ROUNDS" \
    --sweep '' --set model.dtype=bfloat16 train.batch_tokens=65536 --json "$OUT/compile.json"
  "$PY" - "$OUT/compile.json" <<'PY'
import json, statistics, sys
rows = {r["row"]: r for r in json.load(open(sys.argv[1]))["rows"]}
eager, comp = (statistics.median(rows[k]["round_s"][1:]) for k in ("ours-fast", "ours-compiled"))
print(f"later rounds, median: eager {eager:.2f} s, compiled {comp:.2f} s: compiled {eager / comp:.2f}x eager; "
      f"compiled round 1 (with the compile) {rows['ours-compiled']['round_s'][0]:.1f} s")
PY
} 2>&1 | tee "$OUT/compile.log"
exit "${PIPESTATUS[0]}"
