# Sourced by the GPU scripts (sweep.sh, compile_check.sh) from the repository root: gpu_env PYTHON
# installs the carried wheels of .gpu/whl (datasets, flwr-datasets: the image lacks them) into
# /tmp/rolora-site unless they import, and exports the paths and offline switches, so the working
# tree's rolora/ runs without installing it, with the packed data and MiniLM (.gpu/site) as packages.
gpu_env() {
  local py=$1 gpu=$PWD/.gpu
  if ! "$py" -c "import datasets, flwr_datasets" 2>/dev/null; then
    if ! ls "$gpu"/whl/*.whl >/dev/null 2>&1 || [ ! -d "$gpu/site" ]; then
      echo "gpu_env: $gpu/whl or $gpu/site is missing: run 'bash rolora/lab/gpu/sweep.sh pack' on the machine with the network first" >&2
      return 1
    fi
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/rolora-site "$gpu"/whl/*.whl || return 1
  fi
  export PYTHONPATH=$PWD:/tmp/rolora-site:$gpu/site PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
}
