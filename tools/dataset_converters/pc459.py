#!/usr/bin/env python
"""PC-459: VOC2010 images + PASCAL Context ``trainval.tar.gz`` -> ``data/pc459``.

``trainval/<id>.mat`` holds ``LabelMap`` (uint16, 1-based 1-459, alphabetical,
including "unknown"; ``labels.txt`` lists ``N: name``). Train id = value - 1;
a raw 0 becomes 65535 explicitly (no unsigned wrap-around); labels are stored
as single-channel uint16 PNGs. The 5,104 validation ids are the package's
``pascalcontext_val.txt`` (starts with 2008_000002) unless ``--split-file``
gives another list.

RAW_DIR is ``VOCdevkit/VOC2010`` from ``VOCtrainval_03-May-2010.tar`` (or a
folder holding it); the PASCAL Context files are looked for in
``--context-dir`` (default: RAW_DIR, then the VOC2010 folder)::

    RAW_DIR/JPEGImages/<id>.jpg
    CONTEXT_DIR/trainval/<id>.mat
    CONTEXT_DIR/labels.txt            (or CONTEXT_DIR/trainval/labels.txt)

Output::

    data/pc459/images/val/<id>.jpg
    data/pc459/annotations/val/<id>.png   (uint16)

Example::

    python tools/dataset_converters/pc459.py /datasets/VOCdevkit/VOC2010 \\
        --context-dir /datasets/pascal_context --nproc 8
"""
import re
import sys
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (WRITTEN, ConversionError, Task, add_image_mode_argument,  # noqa: E402
                     build_parser, check_label_values, classnames_dir, find_voc_root,
                     first_existing, load_classnames, place_file,
                     require_files_exist, run_main, run_tasks, write_label_png)

BENCHMARK = 'pc459'
SPLIT = 'val'
EXPECTED = dict(val=5104)
IGNORE_INDEX = 65535
NUM_CLASSES = 459
DOWNLOAD_HINT = (
    'Download VOCtrainval_03-May-2010.tar from http://host.robots.ox.ac.uk/pascal/VOC/voc2010/ '
    'and the PASCAL Context trainval.tar.gz (trainval/<id>.mat + labels.txt) from '
    'https://www.cs.stanford.edu/~roozbeh/pascal-context/ (mirror: '
    'https://roozbehm.info/pascal-context/); extract it into --context-dir.')


def read_labels_txt(path: Path) -> dict:
    """``{id: name}`` from PASCAL Context's ``labels.txt`` (lines ``N: name``)."""
    labels = {}
    for line_no, line in enumerate(path.read_text(encoding='utf-8').splitlines(), 1):
        if not line.strip():
            continue
        match = re.match(r'^\s*(\d+)\s*:\s*(.*?)\s*$', line)
        if not match:
            raise ConversionError(f'{path}:{line_no}: expected "N: name", got {line!r}')
        labels[int(match.group(1))] = match.group(2)
    return labels


def load_label_map(mat_path: Path) -> np.ndarray:
    """The ``LabelMap`` array of one PASCAL Context ``.mat`` file."""
    from scipy.io import loadmat
    try:
        mat = loadmat(str(mat_path))
    except Exception as err:  # scipy raises several types for corrupt files
        raise ConversionError(f'{mat_path}: cannot read the .mat file ({err})') from None
    if 'LabelMap' not in mat:
        raise ConversionError(f'{mat_path}: no LabelMap variable; not a PASCAL Context '
                              'label file')
    label_map = np.asarray(mat['LabelMap'])
    if label_map.ndim != 2 or not np.issubdtype(label_map.dtype, np.integer):
        raise ConversionError(f'{mat_path}: LabelMap should be a 2-D integer array, got '
                              f'{label_map.dtype} {label_map.shape}')
    return label_map


def to_train_ids(label_map: np.ndarray, num_labels: int, path) -> np.ndarray:
    """Raw 1..num_labels -> 0..num_labels-1 (uint16); raw 0 -> 65535."""
    values = np.unique(label_map)
    valid = np.zeros(max(int(values.max()) + 1, num_labels + 1), dtype=bool)
    valid[:num_labels + 1] = True
    check_label_values(values, valid, path, f'1-{num_labels} = labels.txt ids, 0 = unlabeled')
    raw = label_map.astype(np.int64)
    out = np.where(raw == 0, IGNORE_INDEX, raw - 1)
    return out.astype(np.uint16)


def convert_one(task: Task, num_labels: int, image_mode: str):
    """Convert one ``.mat`` label map and place its image."""
    mat_path, image = task.payload['mat'], task.payload['image']
    label = to_train_ids(load_label_map(mat_path), num_labels, mat_path)
    out_img, out_label = task.outputs
    write_label_png(out_label, label)
    place_file(image, out_img, image_mode)
    return WRITTEN, np.unique(label)


def main(argv=None) -> dict:
    parser = build_parser(__doc__, BENCHMARK, 'VOCdevkit/VOC2010 (or a folder holding it)')
    parser.add_argument('--context-dir', default=None,
                        help='folder holding trainval/ and labels.txt (default: RAW_DIR, '
                        'then VOC2010)')
    parser.add_argument('--split-file', default=None,
                        help='validation id list (default: the package\'s '
                        'pascalcontext_val.txt, 5,104 ids)')
    add_image_mode_argument(parser)
    args = parser.parse_args(argv)
    raw, out = Path(args.raw_dir), Path(args.out_dir)
    if not raw.is_dir():
        raise ConversionError(f'RAW_DIR {raw} does not exist. {DOWNLOAD_HINT}')
    voc = find_voc_root(raw, 2010, DOWNLOAD_HINT)
    contexts = [Path(args.context_dir)] if args.context_dir else list(dict.fromkeys([raw, voc]))
    mat_dir = first_existing([c / 'trainval' for c in contexts],
                             'the PASCAL Context .mat label maps (trainval/)', DOWNLOAD_HINT)
    context = mat_dir.parent
    labels_txt = first_existing([context / 'labels.txt', mat_dir / 'labels.txt'],
                                'PASCAL Context labels.txt', DOWNLOAD_HINT, kind='file')
    labels = read_labels_txt(labels_txt)
    if sorted(labels) != list(range(1, NUM_CLASSES + 1)):
        raise ConversionError(f'{labels_txt} should list ids 1-{NUM_CLASSES}, found '
                              f'{len(labels)} ids; it is not the 459-label PASCAL Context file')

    split_file = Path(args.split_file) if args.split_file else \
        classnames_dir() / 'pascalcontext_val.txt'
    if not split_file.is_file():
        raise ConversionError(f'missing split file {split_file}')
    ids = split_file.read_text(encoding='utf-8').split()
    mats = [mat_dir / f'{i}.mat' for i in ids]
    images = [voc / 'JPEGImages' / f'{i}.jpg' for i in ids]
    require_files_exist(mats, f'PASCAL Context label maps (ids from {split_file.name})',
                        DOWNLOAD_HINT)
    require_files_exist(images, 'VOC2010 images', DOWNLOAD_HINT)
    tasks = [
        Task(key=i, split=SPLIT,
             outputs=(out / 'images' / SPLIT / f'{i}.jpg',
                      out / 'annotations' / SPLIT / f'{i}.png'),
             payload=dict(mat=m, image=im))
        for i, m, im in zip(ids, mats, images)
    ]
    worker = partial(convert_one, num_labels=NUM_CLASSES, image_mode=args.image_mode)
    return run_tasks(tasks, worker, args, splits=[SPLIT], benchmark=BENCHMARK,
                     num_classes=NUM_CLASSES, ignore_index=IGNORE_INDEX,
                     class_names=load_classnames('pc459'), expected=EXPECTED)


if __name__ == '__main__':
    sys.exit(run_main(main))
