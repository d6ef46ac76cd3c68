#!/usr/bin/env python
"""A-847: ``ADE20K_2021_17_01`` (ADE20K-full) -> ``data/ade847``.

For every entry of ``index_ade20k.pkl`` (lists ``folder`` / ``filename``;
``folder`` starts with ``ADE20K_2021_17_01/``) whose file name has ``val`` as
its second ``_``-separated token:

* the class of a pixel of ``<name>_seg.png`` is ``R // 10 * 256 + G``
  (B holds instances; 0 = unlabeled; the id is 1-based in ``objectnames``);
* the 847 ADE ids of ``ade847_ade_ids.json`` become train ids 0-846
  (wall = 2978 -> 0, ...); every other id and 0 become 65535;
* images whose short side exceeds 512 are resized to short side 512
  (long side rounded, bilinear; labels nearest), smaller ones keep their size;
* labels are written as single-channel uint16 PNGs, images as JPEG.

RAW_DIR is the extracted ``ADE20K_2021_17_01`` folder (registration needed at
https://groups.csail.mit.edu/vision/datasets/ADE20K/)::

    RAW_DIR/index_ade20k.pkl
    RAW_DIR/images/ADE/validation/<scene>/.../ADE_val_XXXXXXXX.jpg  (+ _seg.png)

Output::

    data/ade847/images/validation/ADE_val_XXXXXXXX.jpg
    data/ade847/annotations/validation/ADE_val_XXXXXXXX.png   (uint16)

Example::

    python tools/dataset_converters/ade847.py /datasets/ADE20K_2021_17_01 --nproc 8
"""
import json
import pickle
import sys
from functools import partial
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (WRITTEN, ConversionError, Task, build_parser,  # noqa: E402
                     check_label_values, classnames_dir, load_classnames, read_rgb,
                     require_file, require_files_exist, run_main, run_tasks, write_jpeg,
                     write_label_png)

BENCHMARK = 'ade847'
SPLITS = ('training', 'validation')
EXPECTED = dict(training=25574, validation=2000)
IGNORE_INDEX = 65535
NUM_CLASSES = 847
SHORT_SIDE = 512
#: largest id R // 10 * 256 + G can encode
MAX_ENCODED_ID = 255 // 10 * 256 + 255
DOWNLOAD_HINT = ('Register and download ADE20K_2021_17_01.zip from '
                 'https://groups.csail.mit.edu/vision/datasets/ADE20K/ and pass the '
                 'extracted ADE20K_2021_17_01 folder (the one holding index_ade20k.pkl) '
                 'as RAW_DIR.')


def load_id_lut() -> np.ndarray:
    """(MAX_ENCODED_ID + 1,) uint16 table: ADE mask id -> train id (65535 = ignore)."""
    with open(classnames_dir() / 'ade847_ade_ids.json', encoding='utf-8') as f:
        table = json.load(f)
    if len(table) != NUM_CLASSES:
        raise ConversionError(f'ade847_ade_ids.json holds {len(table)} entries, expected 847')
    lut = np.full(MAX_ENCODED_ID + 1, IGNORE_INDEX, dtype=np.uint16)
    for entry in table:
        lut[int(entry['ade_id'])] = int(entry['train_id'])
    return lut


def decode_ade_class_ids(seg_rgb: np.ndarray) -> np.ndarray:
    """ADE20K-full class ids from an (H, W, 3) RGB ``*_seg.png``: ``R // 10 * 256 + G``."""
    r = seg_rgb[..., 0].astype(np.int32)
    g = seg_rgb[..., 1].astype(np.int32)
    return r // 10 * 256 + g


def resized_shape(height: int, width: int, short_side: int = SHORT_SIDE):
    """Target (height, width): short side ``short_side`` if larger, else unchanged."""
    if min(height, width) <= short_side:
        return height, width
    if height <= width:
        return short_side, int(round(width / height * short_side))
    return int(round(height / width * short_side)), short_side


def convert_one(task: Task, lut: np.ndarray, num_objects: int):
    """Decode, map, resize and write one A-847 image and label."""
    src_img, src_seg = task.payload['image'], task.payload['seg']
    image = read_rgb(src_img)
    with_seg = read_rgb(src_seg)
    if with_seg.shape[:2] != image.shape[:2]:
        raise ConversionError(f'{src_seg}: size {with_seg.shape[1]}x{with_seg.shape[0]} differs '
                              f'from its image {image.shape[1]}x{image.shape[0]}')
    ade_ids = decode_ade_class_ids(with_seg)
    values = np.unique(ade_ids)
    valid = np.zeros(MAX_ENCODED_ID + 1, dtype=bool)
    valid[:num_objects + 1] = True
    check_label_values(values, valid, src_seg,
                       f'0 = unlabeled, 1-{num_objects} = objectnames of index_ade20k.pkl')
    label = lut[ade_ids]
    h, w = image.shape[:2]
    new_h, new_w = resized_shape(h, w)
    if (new_h, new_w) != (h, w):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    out_img, out_label = task.outputs
    write_label_png(out_label, label)
    write_jpeg(out_img, image)
    return WRITTEN, np.unique(label)


def resolve_image_path(raw: Path, folder: str, filename: str) -> Path:
    """Image path of an index entry; ``folder`` starts with the release folder name."""
    direct = raw.parent / folder / filename
    if direct.is_file():
        return direct
    parts = Path(folder).parts
    return raw.joinpath(*parts[1:], filename) if len(parts) > 1 else raw / filename


def split_of(filename: str) -> str:
    """'validation' when the second ``_`` token is ``val`` (``ADE_val_00000001.jpg``)."""
    tokens = filename.split('_')
    return 'validation' if len(tokens) > 1 and tokens[1] == 'val' else 'training'


def main(argv=None) -> dict:
    parser = build_parser(__doc__, BENCHMARK, 'the extracted ADE20K_2021_17_01 folder')
    parser.add_argument('--splits', nargs='+', choices=SPLITS, default=['validation'],
                        help='splits to convert (default: validation)')
    args = parser.parse_args(argv)
    raw, out = Path(args.raw_dir), Path(args.out_dir)
    if not raw.is_dir():
        raise ConversionError(f'RAW_DIR {raw} does not exist. {DOWNLOAD_HINT}')
    index_file = require_file(raw / 'index_ade20k.pkl', 'the ADE20K-full index', DOWNLOAD_HINT)
    with open(index_file, 'rb') as f:
        index = pickle.load(f)
    for key in ('folder', 'filename', 'objectnames'):
        if key not in index:
            raise ConversionError(f'{index_file} has no {key!r} list; it is not the '
                                  f'index_ade20k.pkl of ADE20K_2021_17_01. {DOWNLOAD_HINT}')
    num_objects = len(index['objectnames'])

    tasks = []
    for folder, filename in zip(index['folder'], index['filename']):
        split = split_of(filename)
        if split not in args.splits:
            continue
        image = resolve_image_path(raw, folder, filename)
        seg = image.with_name(image.stem + '_seg.png')
        stem = Path(filename).stem
        tasks.append(Task(
            key=stem, split=split,
            outputs=(out / 'images' / split / f'{stem}.jpg',
                     out / 'annotations' / split / f'{stem}.png'),
            payload=dict(image=image, seg=seg)))
    require_files_exist([t.payload['image'] for t in tasks], 'ADE20K-full images listed in '
                        'index_ade20k.pkl', DOWNLOAD_HINT)
    require_files_exist([t.payload['seg'] for t in tasks], 'ADE20K-full *_seg.png class masks',
                        DOWNLOAD_HINT)
    worker = partial(convert_one, lut=load_id_lut(), num_objects=num_objects)
    return run_tasks(tasks, worker, args, splits=args.splits, benchmark=BENCHMARK,
                     num_classes=NUM_CLASSES, ignore_index=IGNORE_INDEX,
                     class_names=load_classnames('ade847'), expected=EXPECTED,
                     extra_summary=dict(objectnames=num_objects))


if __name__ == '__main__':
    sys.exit(run_main(main))
