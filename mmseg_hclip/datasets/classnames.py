"""Class-name lists and id tables shipped with the package.

The lists live in ``mmseg_hclip/data/classnames/`` (package data) and are read
from there, never from a checkout-relative path, so an installed package works
anywhere. Names are kept exactly as stored: synonyms stay one string
(``'building, edifice'``) and trailing spaces are preserved (ADE-150's
``'bed '`` matches MMSeg's list); the text neck splits on ``', '``.

Available lists (``load_classnames(key)``):

==========  =====  ===============================================
key         count  benchmark
==========  =====  ===============================================
coco        171    COCO-Stuff-171 (training vocabulary)
ade150      150    ADE20K-150 (A-150)
ade847      847    ADE20K-full (A-847)
pc59        59     PASCAL Context 59 (PC-59)
pc459       459    PASCAL Context 459 (PC-459)
voc20       20     PASCAL VOC 20 (PAS-20)
voc20b      59     PASCAL VOC 20 + 39 background proxies (PAS-20b)
==========  =====  ===============================================
"""
import json
from functools import lru_cache
from importlib import resources
from typing import Dict, Tuple

CLASSNAME_PACKAGE = 'mmseg_hclip'
CLASSNAME_SUBDIR = ('data', 'classnames')

#: number of classes each list must hold; guards against a truncated copy.
EXPECTED_LENGTHS = dict(
    coco=171, ade150=150, ade847=847, pc59=59, pc459=459, voc20=20, voc20b=59)


def _data_file(filename: str):
    """Return a traversable handle on a file in the package's class-name folder."""
    node = resources.files(CLASSNAME_PACKAGE)
    for part in CLASSNAME_SUBDIR:
        node = node.joinpath(part)
    return node.joinpath(filename)


def _read_text(filename: str) -> str:
    handle = _data_file(filename)
    if not handle.is_file():
        raise FileNotFoundError(
            f'package data file {CLASSNAME_PACKAGE}/{"/".join(CLASSNAME_SUBDIR)}/{filename} '
            'is missing; reinstall mmseg_hclip (pip install -e .) so its package data '
            'is present')
    return handle.read_text(encoding='utf-8')


@lru_cache(maxsize=None)
def load_classnames(key: str) -> Tuple[str, ...]:
    """Class names of a benchmark, in label order.

    Args:
        key (str): One of ``coco, ade150, ade847, pc59, pc459, voc20, voc20b``.

    Returns:
        tuple[str]: The names exactly as stored in ``<key>.json``.
    """
    if key not in EXPECTED_LENGTHS:
        raise KeyError(f'unknown class-name list {key!r}; '
                       f'choose one of {sorted(EXPECTED_LENGTHS)}')
    names = json.loads(_read_text(f'{key}.json'))
    if len(names) != EXPECTED_LENGTHS[key] or not all(isinstance(n, str) for n in names):
        raise ValueError(f'{key}.json should hold {EXPECTED_LENGTHS[key]} strings, '
                         f'found {len(names)} entries; the package data is corrupted')
    return tuple(names)


@lru_cache(maxsize=None)
def load_ade847_id_table() -> Tuple[Dict, ...]:
    """The A-847 table: 847 dicts ``{'train_id', 'ade_id', 'name'}``.

    ``ade_id`` is the class id decoded from ADE20K-full's ``*_seg.png``
    (``R // 10 * 256 + G``); ``train_id`` is 0..846 in the order of
    ``ade847.json``.
    """
    table = json.loads(_read_text('ade847_ade_ids.json'))
    names = load_classnames('ade847')
    if [t['train_id'] for t in table] != list(range(len(names))) or \
            [t['name'] for t in table] != list(names):
        raise ValueError('ade847_ade_ids.json does not match ade847.json '
                         '(train ids must be 0..846 with the same names)')
    return tuple(table)


@lru_cache(maxsize=None)
def load_pascal_context_val_ids() -> Tuple[str, ...]:
    """The 5,104 PASCAL Context validation ids (``2008_000002`` ...)."""
    return tuple(_read_text('pascalcontext_val.txt').split())

