#!/usr/bin/env bash
# The quickstart in one command: install what is missing, then generate the shapes data,
# evaluate the untrained tiny H-CLIP, train it, evaluate it again, and write plots.
#   bash tools/quickstart.sh [tools/quickstart.py args, e.g. --iters 200]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
export MPLBACKEND=Agg
exec .venv/bin/python tools/quickstart.py "$@"
