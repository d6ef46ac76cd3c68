"""Captioned scenes of the shapes world, for pretraining the quickstart's tiny CLIP.

The segmentation split of :mod:`.shapes` labels only the *seen* names; like web
captions, which mention everything COCO-Stuff does not label, these captions use
every colour and shape word in every combination, the four unseen names
included. Scenes are drawn by :func:`.shapes.render_scene` (same look as the
segmentation data, an independent random stream), and a caption names the
shapes that are visible, with a spatial relation for two shapes::

    "a red circle above a blue square"
    "a photo of two yellow triangles and a green circle"
    "a blue circle on a gray background"

Pure numpy; no torch and no mm* imports.
"""
from typing import Dict, List, Sequence, Tuple

import numpy as np

from .shapes import SEEN_CLASSES, UNSEEN_CLASSES, render_scene

__all__ = ['ALL_NAMES', 'CAPTION_TEMPLATES', 'mentioned', 'describe', 'caption_scene', 'render_captioned_batch',
           'single_shape_batch']

#: Every "<colour> <shape>" name; captions use all of them (seen and unseen alike).
ALL_NAMES: Tuple[str, ...] = tuple(sorted(SEEN_CLASSES + UNSEEN_CLASSES))
#: Sentence frames around the list of objects.
CAPTION_TEMPLATES: Tuple[str, ...] = ('{}', 'a photo of {}', 'a picture of {}',
                                      '{} on a gray background', 'a photo of {} in the scene')
NUMBERS = ('a', 'two', 'three', 'four')
#: A shape covered beyond this fraction is not mentioned.
MIN_VISIBLE = 0.35


def _phrase(name: str, count: int) -> str:
    return f'{NUMBERS[count - 1]} {name}' + ('s' if count > 1 else '')


def _relation(a: Dict, b: Dict) -> str:
    """Where ``a`` is relative to ``b``, along the axis of the larger offset."""
    dy, dx = a['cy'] - b['cy'], a['cx'] - b['cx']
    if abs(dy) >= abs(dx):
        return 'above' if dy < 0 else 'below'
    return 'to the left of' if dx < 0 else 'to the right of'


def mentioned(objects: Sequence[Dict]) -> List[Dict]:
    """The shapes a caption names: those with ``visible >= MIN_VISIBLE`` (the most
    visible one if none is)."""
    visible = [o for o in objects if o['visible'] >= MIN_VISIBLE]
    return visible or [max(objects, key=lambda o: o['visible'])]


def describe(objects: Sequence[Dict], rng: np.random.Generator) -> str:
    """The object list of a caption, e.g. "a red circle above a blue square".

    Args:
        objects: Drawn shapes as returned by ``render_scene(..., return_objects=True)``.
        rng: Chooses between equivalent phrasings and the order of the objects.

    Returns:
        str: The phrase; it names the shapes of :func:`mentioned`.
    """
    visible = mentioned(objects)
    names = sorted({o['name'] for o in visible})
    if len(visible) == 2 and len(names) == 2 and rng.random() < 0.6:
        a, b = (visible[i] for i in rng.permutation(2))
        return f'a {a["name"]} {_relation(a, b)} a {b["name"]}'
    counts = {n: sum(o['name'] == n for o in visible) for n in names}
    parts = [_phrase(names[i], counts[names[i]]) for i in rng.permutation(len(names))]
    if len(parts) == 1:
        return parts[0]
    return ', '.join(parts[:-1]) + ' and ' + parts[-1]


def caption_scene(objects: Sequence[Dict], rng: np.random.Generator) -> str:
    """A full caption: :func:`describe` inside a random :data:`CAPTION_TEMPLATES` frame."""
    phrase = describe(objects, rng)
    return CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))].format(phrase)


def render_captioned_batch(rng: np.random.Generator, n: int, size: int = 96,
                           max_shapes: int = 3,
                           names: Sequence[str] = ALL_NAMES) -> Tuple[np.ndarray, List[str],
                                                                      List[List[Dict]]]:
    """``n`` scenes with their captions.

    Args:
        rng: The only source of randomness.
        n: Number of scenes.
        size: Image side in pixels.
        max_shapes: At most this many shapes per scene.
        names: Names the shapes are drawn from (all 12 by default).

    Returns:
        tuple: images [n, size, size, 3] uint8 RGB, captions (n str), and the
        drawn objects of each scene.
    """
    if int(n) < 1:
        raise ValueError(f'n={n} must be a positive number of scenes')
    images, captions, objects = [], [], []
    for _ in range(int(n)):
        img, _, objs = render_scene(rng, tuple(names), size, max_shapes=max_shapes,
                                    return_objects=True)
        images.append(img)
        captions.append(caption_scene(objs, rng))
        objects.append(objs)
    return np.stack(images), captions, objects


def single_shape_batch(rng: np.random.Generator, per_name: int, size: int = 96,
                       names: Sequence[str] = ALL_NAMES) -> Tuple[np.ndarray, List[int]]:
    """Scenes with exactly one shape, ``per_name`` of each name (for zero-shot classification).

    Returns:
        tuple: images [len(names) * per_name, size, size, 3] uint8 and the index of
        each image's name in ``names``.
    """
    images, targets = [], []
    for i, name in enumerate(names):
        for _ in range(int(per_name)):
            img, _ = render_scene(rng, (name, ), size, max_shapes=1)
            images.append(img)
            targets.append(i)
    return np.stack(images), targets
