#!/usr/bin/env python
"""COCO-Stuff-171: COCO 2017 images + ``stuffthingmaps_trainval2017`` -> ``data/coco_stuff171``.

Raw masks are uint8 PNGs (``<12-digit id>.png``) whose value is the COCO
category id minus one: things 0-89, stuff 91-181, 255 unlabeled. The 80 used
thing ids and the 91 stuff ids become, in ascending order, train ids 0-170
(things first); the 11 unused thing slots and 255 become 255. This is the
table of MMSeg's ``coco_stuff164k.py`` converter, and the output layout is the
one MMSeg's ``COCOStuffDataset`` reads.

RAW_DIR must hold the images and the extracted maps, in either layout::

    RAW_DIR/{train2017,val2017}/*.jpg                      (train2017.zip, val2017.zip)
    RAW_DIR/stuffthingmaps_trainval2017/{train2017,val2017}/*.png
  or
    RAW_DIR/images/{train2017,val2017}/*.jpg
    RAW_DIR/annotations/{train2017,val2017}/*.png          (MMSeg's layout)

Output::

    data/coco_stuff171/images/{train2017,val2017}/<id>.jpg           (unchanged)
    data/coco_stuff171/annotations/{train2017,val2017}/<id>_labelTrainIds.png

Example::

    python tools/dataset_converters/coco_stuff171.py /datasets/coco --nproc 8
"""
import sys
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (WRITTEN, ConversionError, Task, add_image_mode_argument,  # noqa: E402
                     build_parser, check_label_values, first_existing, load_classnames,
                     place_file, read_label_image, require_files_exist, run_main, run_tasks,
                     write_label_png)

BENCHMARK = 'coco_stuff171'
SPLITS = ('train2017', 'val2017')
EXPECTED = dict(train2017=118287, val2017=5000)
IGNORE_INDEX = 255
NUM_CLASSES = 171
#: raw values (category id - 1) of the 11 thing slots COCO never uses
UNUSED_THING_SLOTS = (11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90)
DOWNLOAD_HINT = (
    'Download train2017.zip / val2017.zip from https://cocodataset.org/#download and '
    'stuffthingmaps_trainval2017.zip from '
    'http://calvin.inf.ed.ac.uk/wp-content/uploads/data/cocostuffdataset/'
    'stuffthingmaps_trainval2017.zip, and extract them as described in docs/datasets.md.')


def coco_stuff_lut():
    """Lookup tables for raw COCO-Stuff values.

    Returns:
        tuple[np.ndarray, np.ndarray]: ``lut`` (256,) uint8 raw value -> train
        id (255 = ignore) and ``valid`` (256,) bool, True for the values a raw
        map may hold (0-181 and 255).
    """
    used = [v for v in range(182) if v not in UNUSED_THING_SLOTS]
    assert len(used) == NUM_CLASSES
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    lut[used] = np.arange(NUM_CLASSES, dtype=np.uint8)
    valid = np.zeros(256, dtype=bool)
    valid[:182] = True
    valid[255] = True
    return lut, valid


def convert_one(task: Task, image_mode: str):
    """Map one raw map to train ids and place its image."""
    src_map, src_img = task.payload['map'], task.payload['image']
    lut, valid = coco_stuff_lut()
    raw = read_label_image(src_map)
    if raw.dtype != np.uint8:
        raise ConversionError(f'{src_map}: expected an 8-bit map, got {raw.dtype}')
    check_label_values(np.unique(raw), valid, src_map,
                       '0-181 = COCO category id - 1, 255 = unlabeled')
    label = lut[raw]
    out_img, out_label = task.outputs
    write_label_png(out_label, label)
    place_file(src_img, out_img, image_mode)
    return WRITTEN, np.unique(label)


def main(argv=None) -> dict:
    parser = build_parser(__doc__, BENCHMARK, 'folder with the COCO 2017 images and the '
                          'extracted stuffthingmaps_trainval2017 (see above)')
    parser.add_argument('--splits', nargs='+', choices=SPLITS, default=list(SPLITS),
                        help='splits to convert (default: both)')
    add_image_mode_argument(parser)
    args = parser.parse_args(argv)
    raw, out = Path(args.raw_dir), Path(args.out_dir)
    if not raw.is_dir():
        raise ConversionError(f'RAW_DIR {raw} does not exist. {DOWNLOAD_HINT}')

    tasks = []
    for split in args.splits:
        img_dir = first_existing([raw / split, raw / 'images' / split],
                                 f'the COCO {split} images', DOWNLOAD_HINT)
        map_dir = first_existing(
            [raw / 'stuffthingmaps_trainval2017' / split, raw / 'annotations' / split,
             raw / 'stuffthingmaps' / split], f'the stuffthingmaps of {split}', DOWNLOAD_HINT)
        maps = sorted(p for p in map_dir.glob('*.png') if not p.name.endswith('_labelTrainIds.png'))
        images = [img_dir / f'{m.stem}.jpg' for m in maps]
        require_files_exist(images, f'COCO {split} images for the stuff maps in {map_dir}',
                            DOWNLOAD_HINT)
        for m, im in zip(maps, images):
            tasks.append(Task(
                key=m.stem, split=split,
                outputs=(out / 'images' / split / im.name,
                         out / 'annotations' / split / f'{m.stem}_labelTrainIds.png'),
                payload=dict(map=m, image=im)))
    return run_tasks(tasks, partial(convert_one, image_mode=args.image_mode), args,
                     splits=args.splits, benchmark=BENCHMARK, num_classes=NUM_CLASSES,
                     ignore_index=IGNORE_INDEX, class_names=load_classnames('coco'),
                     expected=EXPECTED)


if __name__ == '__main__':
    sys.exit(run_main(main))
