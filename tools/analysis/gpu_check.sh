#!/usr/bin/env bash
# Prepare a bare GPU machine and run tools/analysis/gpu_check.py once.
#
#   bash tools/analysis/gpu_check.sh [gpu_check.py arguments]      # e.g. --out docs/gpu_check.md
#   bash tools/analysis/gpu_check.sh --skip-setup --device cpu --steps 1 --tiny   # CPU dry run
#
# For a machine that has Python and torch but not the OpenMMLab stack (DESIGN.md §7): the
# Python packages of requirements.txt that are missing are installed next to the existing
# torch (torch itself is never replaced), and mmcv 2.1.0 is built from its source
# distribution with its *CPU* ops only (the model uses no mmcv op; mmseg only imports them):
# the GPU is hidden from the build (CUDA_VISIBLE_DEVICES="", FORCE_CUDA=0), MAX_JOBS=16,
# setuptools < 81 and --no-build-isolation, as tools/install.sh does. A machine without a
# package index: point pip at a folder of wheels / sdists with PIP_NO_INDEX=1
# PIP_FIND_LINKS=/path (pip reads both from the environment).
#
# Environment: PYTHON (default python3), MAX_JOBS (default 16), GPU_CHECK_VENV (default
# /tmp/hclip_gpu_check_venv: a virtual environment that sees the system's torch).
set -Eeuo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
SETUP=1
if [[ "${1:-}" == "--skip-setup" ]]; then
  SETUP=0
  shift
fi
T0=$(date +%s)
say() { printf '[gpu_check +%ss] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }

if [[ "$SETUP" == 1 ]]; then
  VENV="${GPU_CHECK_VENV:-/tmp/hclip_gpu_check_venv}"
  if [[ ! -x "$VENV/bin/python" ]]; then
    say "virtual environment $VENV (with the system's site packages: its torch)"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  fi
  PY="$VENV/bin/python"
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda,
      "gpus", torch.cuda.device_count())'
  PIP=("$PY" -m pip --disable-pip-version-check install -q)
  say "python packages (torch kept as installed)"
  "${PIP[@]}" "setuptools<81" wheel
  # everything in requirements.txt except the test/demo/export extras
  grep -vE '^\s*(#|$)|^(pytest|gradio|onnx|onnxruntime|onnxscript|pycocotools)' requirements.txt \
    | sed 's/\s*#.*//' > /tmp/hclip_gpu_check_requirements.txt
  "${PIP[@]}" -r /tmp/hclip_gpu_check_requirements.txt
  if "$PY" -c 'import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != "2.1.0")' 2>/dev/null; then
    say "mmcv 2.1.0 with ops already importable"
  else
    CXX_STD=$("$PY" tools/install/cxx_std.py)
    if [[ "$CXX_STD" != c++17 ]]; then
      say "this torch needs $CXX_STD: use tools/install.sh (compiler wrapper) instead"
      exit 1
    fi
    say "building mmcv 2.1.0 with CPU ops (MAX_JOBS=${MAX_JOBS:-16})"
    ( export CUDA_VISIBLE_DEVICES="" FORCE_CUDA=0 MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-16}"
      "${PIP[@]}" --no-build-isolation "mmcv==2.1.0" )
    "$PY" -c 'import mmcv, mmcv.ops; print("mmcv", mmcv.__version__, "ops ok")'
  fi
  "${PIP[@]}" --no-deps --no-build-isolation -e .
  say "environment ready"
else
  PY="${PYTHON_BIN:-$ROOT/.venv/bin/python}"
  [[ -x "$PY" ]] || PY="$PYTHON"
fi

say "running tools/analysis/gpu_check.py $*"
"$PY" tools/analysis/gpu_check.py "$@"
say "done"
