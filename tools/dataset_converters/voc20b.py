#!/usr/bin/env python
"""PAS-20b: PASCAL VOC 2012 validation with background -> ``data/voc20b``.

Same input as ``voc20.py``. Masks: 0 (background) -> 20, k -> k - 1 for the 20
classes, 255 (boundary) stays. All 1,449 ``val.txt`` images are kept.
Evaluate with ``BackgroundMappedIoUMetric`` (predictions of the 39 background
proxies of ``voc20b.json`` count as background = 20).

RAW_DIR is ``VOCdevkit/VOC2012`` from ``VOCtrainval_11-May-2012.tar`` (or a
folder holding it).

Output::

    data/voc20b/images/val/<id>.jpg
    data/voc20b/annotations/val/<id>.png

Example::

    python tools/dataset_converters/voc20b.py /datasets/VOCdevkit/VOC2012 --nproc 8
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_main  # noqa: E402
from voc20 import convert_voc  # noqa: E402


def main(argv=None) -> dict:
    return convert_voc(argv, benchmark='voc20b', background=True, description=__doc__)


if __name__ == '__main__':
    sys.exit(run_main(main))
