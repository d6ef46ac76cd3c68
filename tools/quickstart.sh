#!/usr/bin/env bash
# The quickstart in one command: install what is missing, then (tools/quickstart.py) show the
# shipped tiny CLIP's zero-shot accuracy, generate the shapes data, train and evaluate three
# settings (frozen CLIP + head, attention fine-tuning + head, H-CLIP) x 3 seeds, and write
# the table, a bar chart, training curves and overlays.
#   bash tools/quickstart.sh [tools/quickstart.py args, e.g. --fast  (H-CLIP, one seed)]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install.sh
export MPLBACKEND=Agg
exec .venv/bin/python tools/quickstart.py "$@"
