#!/usr/bin/env python
"""PAS-20: PASCAL VOC 2012 validation without background -> ``data/voc20``.

Masks are palette PNGs (``SegmentationClass/<id>.png``: 0 background, 1-20
classes, 255 boundary). PAS-20: 0 -> 255, k -> k - 1, 255 stays; an image whose
mask is then entirely 255 is dropped (the summary counts what was written).
``voc20b.py`` writes PAS-20b from the same input (background -> 20, nothing
dropped).

RAW_DIR is ``VOCdevkit/VOC2012`` from ``VOCtrainval_11-May-2012.tar`` (or a
folder holding it)::

    RAW_DIR/JPEGImages/<id>.jpg
    RAW_DIR/SegmentationClass/<id>.png
    RAW_DIR/ImageSets/Segmentation/val.txt     (1,449 ids)

Output::

    data/voc20/images/val/<id>.jpg
    data/voc20/annotations/val/<id>.png

Example::

    python tools/dataset_converters/voc20.py /datasets/VOCdevkit/VOC2012 --nproc 8
"""
import sys
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (DROPPED, WRITTEN, ConversionError, Task,  # noqa: E402
                     add_image_mode_argument, build_parser, check_label_values, find_voc_root,
                     load_classnames, place_file, read_label_image, require_dir, require_file,
                     require_files_exist, run_main, run_tasks, write_label_png)

EXPECTED = dict(train=1464, val=1449)
IGNORE_INDEX = 255
NUM_VOC_CLASSES = 20
DOWNLOAD_HINT = ('Download VOCtrainval_11-May-2012.tar from '
                 'http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ and pass the extracted '
                 'VOCdevkit/VOC2012 as RAW_DIR.')


def voc_lut(background: bool):
    """Lookup tables for raw VOC mask values.

    Args:
        background (bool): False for PAS-20 (background -> 255), True for
            PAS-20b (background -> 20).

    Returns:
        tuple[np.ndarray, np.ndarray]: ``lut`` (256,) uint8 raw -> train id and
        ``valid`` (256,) bool, True for 0-20 and 255.
    """
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[1:NUM_VOC_CLASSES + 1] = np.arange(NUM_VOC_CLASSES, dtype=np.uint8)
    lut[0] = NUM_VOC_CLASSES if background else IGNORE_INDEX
    valid = np.zeros(256, dtype=bool)
    valid[:NUM_VOC_CLASSES + 1] = True
    valid[255] = True
    return lut, valid


def convert_one(task: Task, background: bool, image_mode: str):
    """Map one palette mask; drop it when nothing is labelled."""
    src_mask, src_img = task.payload['mask'], task.payload['image']
    raw = read_label_image(src_mask)
    if raw.dtype != np.uint8:
        raise ConversionError(f'{src_mask}: expected an 8-bit palette PNG, got {raw.dtype}')
    lut, valid = voc_lut(background)
    check_label_values(np.unique(raw), valid, src_mask,
                       '0 = background, 1-20 = classes, 255 = boundary')
    label = lut[raw]
    if np.all(label == IGNORE_INDEX):
        return DROPPED, None
    out_img, out_label = task.outputs
    write_label_png(out_label, label)
    place_file(src_img, out_img, image_mode)
    return WRITTEN, np.unique(label)


def convert_voc(argv, *, benchmark: str, background: bool, description: str) -> dict:
    """Shared main of ``voc20.py`` and ``voc20b.py``."""
    parser = build_parser(description, benchmark, 'VOCdevkit/VOC2012 (or a folder holding it)')
    parser.add_argument('--split', default='val',
                        help='ImageSets/Segmentation/<split>.txt to convert (default: val)')
    add_image_mode_argument(parser)
    args = parser.parse_args(argv)
    raw, out = Path(args.raw_dir), Path(args.out_dir)
    if not raw.is_dir():
        raise ConversionError(f'RAW_DIR {raw} does not exist. {DOWNLOAD_HINT}')
    voc = find_voc_root(raw, 2012, DOWNLOAD_HINT)
    mask_dir = require_dir(voc / 'SegmentationClass', 'VOC2012 segmentation masks',
                           DOWNLOAD_HINT)
    split_file = require_file(voc / 'ImageSets' / 'Segmentation' / f'{args.split}.txt',
                              f'the VOC2012 {args.split} id list', DOWNLOAD_HINT)
    ids = split_file.read_text(encoding='utf-8').split()
    masks = [mask_dir / f'{i}.png' for i in ids]
    images = [voc / 'JPEGImages' / f'{i}.jpg' for i in ids]
    require_files_exist(masks, 'VOC2012 segmentation masks', DOWNLOAD_HINT)
    require_files_exist(images, 'VOC2012 images', DOWNLOAD_HINT)
    tasks = [
        Task(key=i, split=args.split,
             outputs=(out / 'images' / args.split / f'{i}.jpg',
                      out / 'annotations' / args.split / f'{i}.png'),
             payload=dict(mask=m, image=im))
        for i, m, im in zip(ids, masks, images)
    ]
    names = load_classnames('voc20') + (['background'] if background else [])
    worker = partial(convert_one, background=background, image_mode=args.image_mode)
    return run_tasks(tasks, worker, args, splits=[args.split], benchmark=benchmark,
                     num_classes=len(names), ignore_index=IGNORE_INDEX, class_names=names,
                     expected=EXPECTED)


def main(argv=None) -> dict:
    return convert_voc(argv, benchmark='voc20', background=False, description=__doc__)


if __name__ == '__main__':
    sys.exit(run_main(main))
