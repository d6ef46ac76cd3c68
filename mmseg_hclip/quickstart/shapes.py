"""A deterministic synthetic open-vocabulary dataset: coloured shapes.

Scenes of textured shapes on a noisy background. Classes have compositional
names "<colour> <shape>" — e.g. "red circle", "blue square". The training split
only contains the *seen* classes; the validation split also contains *unseen*
combinations whose colour and shape words both occur in seen names but never
together ("blue circle" when "blue square" and "red circle" are seen), so the
open-vocabulary question can be asked in miniature: does a model trained on
the seen names segment the unseen ones when given their names?

Layout written (MMSeg's folder convention)::

    root/
      img_dir/{train,val}/00000.png   RGB uint8
      ann_dir/{train,val}/00000.png   uint8 label = index in EVAL_CLASSES
      meta.json                       generator parameters, class lists, counts

Pure numpy + PIL; no mm* imports.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = ['COLOURS', 'SHAPES', 'SEEN_CLASSES', 'UNSEEN_CLASSES', 'TRAIN_CLASSES',
           'EVAL_CLASSES', 'generate_shapes_dataset', 'render_scene']

COLOURS: Dict[str, Tuple[int, int, int]] = {
    'red': (220, 40, 40),
    'green': (40, 190, 60),
    'blue': (40, 80, 230),
    'yellow': (235, 215, 40),
}
SHAPES = ('circle', 'square', 'triangle')

# Every colour and every shape word occurs in at least one seen name.
UNSEEN_CLASSES: Tuple[str, ...] = ('blue circle', 'yellow square', 'green triangle', 'red triangle')
SEEN_CLASSES: Tuple[str, ...] = tuple(
    f'{c} {s}' for c in COLOURS for s in SHAPES if f'{c} {s}' not in UNSEEN_CLASSES)
BACKGROUND = 'background'
TRAIN_CLASSES: Tuple[str, ...] = (BACKGROUND, ) + SEEN_CLASSES
EVAL_CLASSES: Tuple[str, ...] = TRAIN_CLASSES + UNSEEN_CLASSES
FORMAT_VERSION = 2


def _shape_mask(shape: str, size: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    if shape == 'circle':
        return (yy - cy)**2 + (xx - cx)**2 <= r * r
    if shape == 'square':
        return (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
    if shape == 'triangle':  # apex up, base at cy + r
        top, bottom = cy - r, cy + r
        half = (yy - top) / (2 * r) * r
        return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)
    raise ValueError(f'unknown shape {shape!r}; expected one of {SHAPES}')


def render_scene(rng: np.random.Generator, classes: Sequence[str], size: int,
                 max_shapes: int = 4, return_objects: bool = False):
    """Render one scene.

    Args:
        rng: Random generator (the only source of randomness).
        classes: Names "<colour> <shape>" that may appear in this scene.
        size: Image side in pixels.
        max_shapes: At most this many shapes (at least one).
        return_objects: Also return the drawn shapes (for captions).

    Returns:
        tuple: image [size, size, 3] uint8 RGB and label [size, size] uint8
        (index into :data:`EVAL_CLASSES`); with ``return_objects`` a third
        item, a list of dicts ``name``, ``cy``, ``cx``, ``r`` (pixels) and
        ``visible`` (fraction of the shape's pixels not covered by shapes
        drawn later), in drawing order.
    """
    if int(max_shapes) < 1:
        raise ValueError(f'max_shapes={max_shapes} must be at least 1')
    base = rng.integers(90, 150)
    img = (base + rng.normal(0, 12, (size, size, 3))).clip(0, 255)
    label = np.zeros((size, size), np.uint8)
    instances = np.full((size, size), -1, np.int16) if return_objects else None
    objects = []
    for k in range(int(rng.integers(1, max_shapes + 1))):
        name = classes[int(rng.integers(len(classes)))]
        colour, shape = name.split(' ')
        r = rng.uniform(0.16, 0.30) * size
        cy, cx = rng.uniform(r, size - r, 2)
        mask = _shape_mask(shape, size, cy, cx, r)
        rgb = np.array(COLOURS[colour], np.float32) + rng.normal(0, 10, 3)
        shade = 1.0 + rng.normal(0, 0.05, (size, size, 1))  # mild texture
        img = np.where(mask[..., None], (rgb * shade).clip(0, 255), img)
        label[mask] = EVAL_CLASSES.index(name)
        if return_objects:
            instances[mask] = k
            objects.append(dict(name=name, cy=float(cy), cx=float(cx), r=float(r),
                                area=int(mask.sum())))
    if not return_objects:
        return img.astype(np.uint8), label
    for k, obj in enumerate(objects):
        obj['visible'] = float((instances == k).sum()) / max(obj.pop('area'), 1)
    return img.astype(np.uint8), label, objects


def generate_shapes_dataset(root: str, num_train: int = 320, num_val: int = 64,
                            size: int = 64, seed: int = 0, overwrite: bool = False) -> dict:
    """Write the dataset under ``root`` (skipped when the same one is there).

    Args:
        root: Output folder.
        num_train: Training images (seen classes only).
        num_val: Validation images (seen and unseen classes).
        size: Image side in pixels.
        seed: Seed of the generator; equal arguments give identical files.
        overwrite: Rewrite even if ``root/meta.json`` records the same dataset.

    Returns:
        dict: The metadata written to ``root/meta.json``.
    """
    for name, value in (('num_train', num_train), ('num_val', num_val), ('size', size)):
        if int(value) < 1:
            raise ValueError(f'{name}={value} must be a positive integer')
    if size < 16:
        raise ValueError(f'size={size} is too small to draw shapes; use 16 or more')
    meta = dict(format_version=FORMAT_VERSION, num_train=num_train, num_val=num_val, size=size,
                seed=seed, train_classes=list(TRAIN_CLASSES), eval_classes=list(EVAL_CLASSES),
                seen_classes=list(SEEN_CLASSES), unseen_classes=list(UNSEEN_CLASSES))
    meta_path = osp.join(root, 'meta.json')
    if not overwrite and osp.isfile(meta_path):
        with open(meta_path) as f:
            old = json.load(f)
        if {k: old.get(k) for k in meta} == meta:
            return old
    rng = np.random.default_rng(seed)
    counts: Dict[str, List[int]] = {}
    for split, n, classes in (('train', num_train, SEEN_CLASSES),
                              ('val', num_val, SEEN_CLASSES + UNSEEN_CLASSES)):
        img_dir = osp.join(root, 'img_dir', split)
        ann_dir = osp.join(root, 'ann_dir', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        pixels = np.zeros(len(EVAL_CLASSES), np.int64)
        for i in range(n):
            img, label = render_scene(rng, classes, size)
            Image.fromarray(img).save(osp.join(img_dir, f'{i:05d}.png'))
            Image.fromarray(label).save(osp.join(ann_dir, f'{i:05d}.png'))
            pixels += np.bincount(label.ravel(), minlength=len(EVAL_CLASSES))
        counts[split] = pixels.tolist()
    meta['pixels_per_class'] = counts
    with open(meta_path, 'w') as f:
        json.dump(meta, f, indent=1)
    return meta
