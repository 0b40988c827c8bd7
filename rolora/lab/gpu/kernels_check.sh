#!/usr/bin/env bash
# One-call GPU check of rolora.kernels: compiled kernel tests (gpu-marked ones included), then the
# benchmark's target preset. Run from the repository root on a CUDA machine with torch, triton,
# transformers, peft and pytest installed (rolora need not be installed; nothing is downloaded):
#
#     OUT=/some/folder bash rolora/lab/gpu/kernels_check.sh
#
# Writes to $OUT (default ./gpu-check-out), 6 files: check.log (environment, test output, bench
# report), pytest.xml (JUnit), bench.csv / bench.json / kernels.csv / report.txt (the preset).
# The last lines printed are the pytest summary and one PASS/MISS line per target.
# ROLORA_GPU_TEST_TIMEOUT / ROLORA_GPU_BENCH_TIMEOUT (seconds, default 420 each) bound the two parts.
# ROLORA_GPU_CHECK_TINY=1 shrinks the bench to tiny shapes and runs only the fast kernel tests: with
# TRITON_INTERPRET=1 and no GPU it smoke-tests this script itself (see BENCHMARKS.md).
set -uo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
LOG=$OUT/check.log
PY=${PYTHON:-python}

# Import the working tree's rolora/ without installing it, and keep the tree clean.
PKG=$(mktemp -d)
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONDONTWRITEBYTECODE=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$PKG/triton-cache}

{
  echo "== environment $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit \
    --format=csv 2>&1 || echo "(no nvidia-smi)"
  $PY -c "import sys, torch, triton; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| cuda', torch.version.cuda, '| triton', triton.__version__, '| gpu', torch.cuda.is_available())"
  $PY -c "import peft, transformers; print('peft', peft.__version__, '| transformers', transformers.__version__)"
  $PY -c "import hypothesis" 2>/dev/null && echo "hypothesis present" || echo "hypothesis absent"
} 2>&1 | tee "$LOG"

# The suite's conftest.py sets up CPU-only conveniences (the interpreter, hypothesis profiles):
# --noconftest keeps it out, so the kernels run compiled on the GPU and nothing else is needed.
TESTS=(tests/test_kernels_*.py)
XDIST=(-n 8)
$PY -c "import xdist" 2>/dev/null || XDIST=()
# ROLORA_BENCH_ARGS: extra options for the preset, e.g. "--gemm-config large_m=128x256x64:w8:s4".
read -r -a EXTRA <<< "${ROLORA_BENCH_ARGS:-}"
BENCH=(--target "${EXTRA[@]}")
if [ "${ROLORA_GPU_CHECK_TINY:-0}" = 1 ]; then
  TESTS=(tests/test_kernels_triton.py tests/test_kernels_phases.py)
  XDIST=()
  BENCH=(--target --tiny --methods floor,peft,peft-B,full,B,full@triton,full@torch --repeats 3)
fi
echo "== kernel tests: ${TESTS[*]}" | tee -a "$LOG"
timeout ${ROLORA_GPU_TEST_TIMEOUT:-420} $PY -m pytest -c pyproject.toml --rootdir . -p no:cacheprovider --noconftest -q \
  "${XDIST[@]}" --junitxml "$OUT/pytest.xml" "${TESTS[@]}" >> "$LOG" 2>&1
TEST_RC=$?
echo "== bench ${BENCH[*]}" | tee -a "$LOG"
timeout ${ROLORA_GPU_BENCH_TIMEOUT:-420} $PY -m rolora.lab.bench.kernels "${BENCH[@]}" --no-progress --out "$OUT" >> "$LOG" 2>&1
BENCH_RC=$?

echo "== summary (tests exit $TEST_RC, bench exit $BENCH_RC)" | tee -a "$LOG"
grep -E "^(FAILED|ERROR)|[0-9]+ (passed|failed)" "$LOG" | tail -25
grep -E "^(PASS|MISS|N/A|INFO|bench wall)" "$LOG" | cut -c1-600
rm -rf "$PKG"
exit $(( TEST_RC != 0 || BENCH_RC != 0 ))
