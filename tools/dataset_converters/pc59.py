#!/usr/bin/env python
"""PC-59: VOC2010 images + ``trainval_merged.json`` (PASCAL in Detail) -> ``data/pc59``.

For every image of the requested phase (``val`` by default), each entry of
``annos_segmentation`` paints its ``category_id`` into a zero mask where its
RLE mask is set (later entries overwrite earlier ones). The category ids are in
the 459-label space; the 60 ids of ``PC59_CATEGORY_IDS`` become, in ascending
order, background -> 255 and classes 0-58 (alphabetical, aeroplane ... wood);
every other id -> 255. The RLE masks are decoded here, without the Detail API
(which is not on the package index). Same values as MMSeg's
``pascal_context.py`` + ``PascalContextDataset59`` after its zero reduction.

RAW_DIR is ``VOCdevkit/VOC2010`` from ``VOCtrainval_03-May-2010.tar`` (or a
folder holding ``VOCdevkit/VOC2010``); ``trainval_merged.json`` is looked for
in RAW_DIR unless ``--json`` says where it is::

    RAW_DIR/JPEGImages/<id>.jpg
    RAW_DIR/trainval_merged.json

Output::

    data/pc59/images/val/<id>.jpg
    data/pc59/annotations/val/<id>.png

Example::

    python tools/dataset_converters/pc59.py /datasets/VOCdevkit/VOC2010 --nproc 8
"""
import json
import sys
from functools import partial
from pathlib import Path
from typing import List, Sequence, Union

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (WRITTEN, ConversionError, Task, add_image_mode_argument,  # noqa: E402
                     build_parser, classnames_dir, find_voc_root, first_existing,
                     load_classnames, place_file, require_files_exist, run_main, run_tasks,
                     write_label_png)

BENCHMARK = 'pc59'
EXPECTED = dict(train=4996, val=5104)
IGNORE_INDEX = 255
NUM_CLASSES = 59
#: the 59 class ids (459-label space) plus background (0), ascending
PC59_CATEGORY_IDS = (
    0, 2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105,
    113, 115, 144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308,
    324, 326, 347, 349, 354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454,
    458)
#: largest category id of the 459-label space (0 = background / unlabeled)
MAX_CATEGORY_ID = 459
DOWNLOAD_HINT = (
    'Download VOCtrainval_03-May-2010.tar from '
    'http://host.robots.ox.ac.uk/pascal/VOC/voc2010/ and trainval_merged.json from '
    'https://codalabuser.blob.core.windows.net/public/trainval_merged.json (the PASCAL in '
    'Detail annotations); pass VOCdevkit/VOC2010 as RAW_DIR and put the json inside it or '
    'give --json.')


def pc59_lut() -> np.ndarray:
    """(MAX_CATEGORY_ID + 1,) uint8 table: Detail category id -> PC-59 train id."""
    lut = np.full(MAX_CATEGORY_ID + 1, IGNORE_INDEX, dtype=np.uint8)
    lut[list(PC59_CATEGORY_IDS[1:])] = np.arange(NUM_CLASSES, dtype=np.uint8)
    return lut


# --------------------------------------------------------------------------
# COCO-style run-length encoding (column-major, counts alternate 0-run / 1-run)
# --------------------------------------------------------------------------
def rle_string_to_counts(text: Union[str, bytes]) -> List[int]:
    """Decode the compact RLE string of the COCO mask API into run lengths.

    Each count is stored as 5-bit groups (least significant first) in
    characters ``48 + group``, bit 0x20 meaning "more groups follow", bit 0x10
    of the last group the sign; from the third count on, the value is a
    difference to the count two places earlier.
    """
    if isinstance(text, bytes):
        text = text.decode('ascii')
    counts: List[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            group = ord(text[pos]) - 48
            value |= (group & 0x1f) << (5 * shift)
            more = bool(group & 0x20)
            pos += 1
            shift += 1
            if not more and (group & 0x10):
                value |= -1 << (5 * shift)
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def counts_to_rle_string(counts: Sequence[int]) -> str:
    """Inverse of ``rle_string_to_counts`` (used to build test fixtures)."""
    chars = []
    for i, count in enumerate(counts):
        value = int(count) - (int(counts[i - 2]) if i > 2 else 0)
        more = True
        while more:
            group = value & 0x1f
            value >>= 5
            more = (value != -1) if (group & 0x10) else (value != 0)
            if more:
                group |= 0x20
            chars.append(chr(group + 48))
    return ''.join(chars)


def decode_rle(rle: dict) -> np.ndarray:
    """Binary (H, W) uint8 mask from ``{'size': [H, W], 'counts': str | list}``."""
    height, width = (int(v) for v in rle['size'])
    counts = rle['counts']
    if isinstance(counts, (str, bytes)):
        counts = rle_string_to_counts(counts)
    counts = np.asarray(counts, dtype=np.int64)
    if counts.size and (counts.min() < 0 or counts.sum() != height * width):
        raise ValueError(f'RLE counts sum to {int(counts.sum())}, expected {height * width} '
                         f'for size {height}x{width}')
    flat = np.repeat((np.arange(counts.size) % 2).astype(np.uint8), counts)
    if flat.size != height * width:
        raise ValueError(f'RLE covers {flat.size} pixels, expected {height * width}')
    return flat.reshape(width, height).T


def encode_rle(mask: np.ndarray) -> dict:
    """COCO-style compact RLE of a binary (H, W) mask (used to build test fixtures)."""
    flat = np.asarray(mask, dtype=np.uint8).T.reshape(-1)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return dict(size=list(mask.shape), counts=counts_to_rle_string(counts))


def paint_category_mask(height: int, width: int, annotations: Sequence[dict],
                        key: str) -> np.ndarray:
    """Paint each annotation's ``category_id`` in order (later ones win)."""
    mask = np.zeros((height, width), dtype=np.int32)
    for ann in annotations:
        cat = int(ann['category_id'])
        if not 0 <= cat <= MAX_CATEGORY_ID:
            raise ConversionError(
                f'trainval_merged.json, image {key}: label value {cat} (category_id of '
                f'annotation {ann.get("id")}) is outside the valid range 0-{MAX_CATEGORY_ID}')
        try:
            region = decode_rle(ann['segmentation'])
        except (ValueError, KeyError, TypeError) as err:
            raise ConversionError(f'trainval_merged.json, image {key}, annotation '
                                  f'{ann.get("id")}: bad RLE mask ({err})') from None
        if region.shape != mask.shape:
            raise ConversionError(
                f'trainval_merged.json, image {key}, annotation {ann.get("id")}: mask size '
                f'{region.shape} differs from the image size {mask.shape}')
        mask[region.astype(bool)] = cat
    return mask


def convert_one(task: Task, image_mode: str):
    """Rasterise one image's Detail annotations into PC-59 train ids."""
    p = task.payload
    categories = paint_category_mask(p['height'], p['width'], p['annotations'], task.key)
    label = pc59_lut()[categories]
    out_img, out_label = task.outputs
    write_label_png(out_label, label)
    place_file(p['image'], out_img, image_mode)
    return WRITTEN, np.unique(label)


def main(argv=None) -> dict:
    parser = build_parser(__doc__, BENCHMARK, 'VOCdevkit/VOC2010 (or a folder holding it)')
    parser.add_argument('--json', default=None,
                        help='trainval_merged.json (default: RAW_DIR/trainval_merged.json)')
    parser.add_argument('--split', choices=('val', 'train'), default='val',
                        help="Detail phase to convert (default: val)")
    add_image_mode_argument(parser)
    args = parser.parse_args(argv)
    raw, out = Path(args.raw_dir), Path(args.out_dir)
    if not raw.is_dir():
        raise ConversionError(f'RAW_DIR {raw} does not exist. {DOWNLOAD_HINT}')
    voc = find_voc_root(raw, 2010, DOWNLOAD_HINT)
    jpeg_dir = voc / 'JPEGImages'
    json_candidates = [Path(args.json)] if args.json else [
        voc / 'trainval_merged.json', raw / 'trainval_merged.json']
    json_path = first_existing(json_candidates, 'trainval_merged.json', DOWNLOAD_HINT,
                               kind='file')
    print(f'reading {json_path} ...')
    with open(json_path, encoding='utf-8') as f:
        detail = json.load(f)
    for key in ('images', 'annos_segmentation'):
        if key not in detail:
            raise ConversionError(f'{json_path} has no {key!r}; it is not the PASCAL in Detail '
                                  f'trainval_merged.json. {DOWNLOAD_HINT}')

    images = {img['image_id']: img for img in detail['images'] if img.get('phase') == args.split}
    per_image = {image_id: [] for image_id in images}
    for ann in detail['annos_segmentation']:
        if ann['image_id'] in per_image:
            per_image[ann['image_id']].append(ann)
    tasks = []
    for image_id, img in sorted(images.items(), key=lambda kv: kv[1]['file_name']):
        stem = Path(img['file_name']).stem
        tasks.append(Task(
            key=stem, split=args.split,
            outputs=(out / 'images' / args.split / f'{stem}.jpg',
                     out / 'annotations' / args.split / f'{stem}.png'),
            payload=dict(image=jpeg_dir / img['file_name'], height=int(img['height']),
                         width=int(img['width']), annotations=per_image[image_id])))
    require_files_exist([t.payload['image'] for t in tasks], 'VOC2010 images listed in '
                        f'{json_path.name}', DOWNLOAD_HINT)
    if args.split == 'val':
        # PC-459 evaluates the ids of pascalcontext_val.txt; say so if the sets differ
        listed = set((classnames_dir() / 'pascalcontext_val.txt').read_text().split())
        found = {t.key for t in tasks}
        if found and found != listed:
            print(f'note: {len(found - listed)} val image(s) of {json_path.name} are not in '
                  f'pascalcontext_val.txt and {len(listed - found)} listed id(s) are not val '
                  'images of the json (PC-459 uses that list)')
    return run_tasks(tasks, partial(convert_one, image_mode=args.image_mode), args,
                     splits=[args.split], benchmark=BENCHMARK, num_classes=NUM_CLASSES,
                     ignore_index=IGNORE_INDEX, class_names=load_classnames('pc59'),
                     expected=EXPECTED)


if __name__ == '__main__':
    sys.exit(run_main(main))
