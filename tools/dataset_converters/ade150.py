#!/usr/bin/env python
"""A-150: ``ADEChallengeData2016`` -> ``data/ade150``.

The raw annotation PNGs (uint8, 0 = unlabeled, 1-150 = classes) are checked
and copied **unchanged**: ``ADE20K150Dataset`` (MMSeg's ``ADE20KDataset``
convention, ``reduce_zero_label=True``) turns them into 0-149 / 255 at load
time. Reducing here as well would shift every class twice.

RAW_DIR is the extracted ``ADEChallengeData2016.zip``::

    RAW_DIR/images/{training,validation}/ADE_*.jpg
    RAW_DIR/annotations/{training,validation}/ADE_*.png

Output (same layout; ``--splits`` picks the splits, validation by default)::

    data/ade150/images/validation/ADE_val_XXXXXXXX.jpg
    data/ade150/annotations/validation/ADE_val_XXXXXXXX.png

Example::

    python tools/dataset_converters/ade150.py /datasets/ADEChallengeData2016 --nproc 8
"""
import sys
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (WRITTEN, ConversionError, Task, add_image_mode_argument,  # noqa: E402
                     build_parser, check_label_values, load_classnames, place_file,
                     read_label_image, require_dir, require_files_exist, run_main, run_tasks)

BENCHMARK = 'ade150'
SPLITS = ('training', 'validation')
EXPECTED = dict(training=20210, validation=2000)
NUM_CLASSES = 150
DOWNLOAD_HINT = ('Download ADEChallengeData2016.zip from '
                 'http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip '
                 'and pass the extracted ADEChallengeData2016 folder as RAW_DIR.')


def convert_one(task: Task, image_mode: str):
    """Check one raw annotation (values 0-150) and place it with its image."""
    src_ann, src_img = task.payload['annotation'], task.payload['image']
    raw = read_label_image(src_ann)
    values = np.unique(raw)
    valid = np.zeros(max(256, int(values.max()) + 1), dtype=bool)
    valid[:NUM_CLASSES + 1] = True
    check_label_values(values, valid, src_ann, '0 = unlabeled, 1-150 = classes')
    out_img, out_ann = task.outputs
    place_file(src_ann, out_ann, 'copy')
    place_file(src_img, out_img, image_mode)
    train_ids = values[values > 0].astype(np.int64) - 1
    return WRITTEN, train_ids


def main(argv=None) -> dict:
    parser = build_parser(__doc__, BENCHMARK, 'the extracted ADEChallengeData2016 folder')
    parser.add_argument('--splits', nargs='+', choices=SPLITS, default=['validation'],
                        help='splits to convert (default: validation)')
    add_image_mode_argument(parser)
    args = parser.parse_args(argv)
    raw, out = Path(args.raw_dir), Path(args.out_dir)
    if not raw.is_dir():
        raise ConversionError(f'RAW_DIR {raw} does not exist. {DOWNLOAD_HINT}')

    tasks = []
    for split in args.splits:
        img_dir = require_dir(raw / 'images' / split, f'ADE-150 {split} images', DOWNLOAD_HINT)
        ann_dir = require_dir(raw / 'annotations' / split, f'ADE-150 {split} annotations',
                              DOWNLOAD_HINT)
        images = sorted(img_dir.glob('*.jpg'))
        anns = [ann_dir / f'{p.stem}.png' for p in images]
        require_files_exist(anns, f'ADE-150 {split} annotations', DOWNLOAD_HINT)
        for im, ann in zip(images, anns):
            tasks.append(Task(
                key=im.stem, split=split,
                outputs=(out / 'images' / split / im.name, out / 'annotations' / split / ann.name),
                payload=dict(image=im, annotation=ann)))
    return run_tasks(tasks, partial(convert_one, image_mode=args.image_mode), args,
                     splits=args.splits, benchmark=BENCHMARK, num_classes=NUM_CLASSES,
                     ignore_index=255, class_names=load_classnames('ade150'),
                     expected=EXPECTED)


if __name__ == '__main__':
    sys.exit(run_main(main))
