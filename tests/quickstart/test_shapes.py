"""The embedded shapes dataset: deterministic, compositional, in MMSeg's layout."""
import filecmp
import json
import os

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from mmseg_hclip.quickstart import (EVAL_CLASSES, SEEN_CLASSES, TRAIN_CLASSES, UNSEEN_CLASSES,
                                    ShapesDataset, generate_shapes_dataset)
from mmseg_hclip.quickstart.shapes import COLOURS, SHAPES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_vocabularies_are_compositional():
    assert set(SEEN_CLASSES).isdisjoint(UNSEEN_CLASSES)
    assert len(SEEN_CLASSES) + len(UNSEEN_CLASSES) == len(COLOURS) * len(SHAPES)
    seen_words = {w for name in SEEN_CLASSES for w in name.split()}
    for name in UNSEEN_CLASSES:  # every word of an unseen name was seen, never together
        assert set(name.split()) <= seen_words
    assert EVAL_CLASSES[:len(TRAIN_CLASSES)] == TRAIN_CLASSES


def test_generation_is_deterministic_and_labelled(tmp_path):
    a = generate_shapes_dataset(str(tmp_path / 'a'), num_train=6, num_val=4, size=48, seed=3)
    generate_shapes_dataset(str(tmp_path / 'b'), num_train=6, num_val=4, size=48, seed=3)
    for sub in ('img_dir/train', 'ann_dir/train', 'img_dir/val', 'ann_dir/val'):
        cmp = filecmp.dircmp(tmp_path / 'a' / sub, tmp_path / 'b' / sub)
        assert not cmp.diff_files and not cmp.left_only and len(cmp.common_files) in (4, 6)
    img = np.array(Image.open(tmp_path / 'a/img_dir/train/00000.png'))
    ann = np.array(Image.open(tmp_path / 'a/ann_dir/train/00000.png'))
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8
    assert ann.shape == (48, 48) and ann.dtype == np.uint8
    # training images only hold seen classes (+ background)
    train_ids = set()
    for f in os.listdir(tmp_path / 'a/ann_dir/train'):
        train_ids |= set(np.unique(np.array(Image.open(tmp_path / 'a/ann_dir/train' / f))))
    assert max(train_ids) < len(TRAIN_CLASSES)
    # shape pixels carry the colour of their class name
    for cls_id in train_ids - {0}:
        colour = EVAL_CLASSES[cls_id].split()[0]
        mean = img[ann == cls_id].mean(0) if (ann == cls_id).any() else None
        if mean is not None:
            assert np.abs(mean - np.array(COLOURS[colour])).max() < 40
    meta = json.loads((tmp_path / 'a/meta.json').read_text())
    assert meta == a and meta['unseen_classes'] == list(UNSEEN_CLASSES)
    # a second call with the same arguments does not rewrite anything
    mtime = os.path.getmtime(tmp_path / 'a/meta.json')
    generate_shapes_dataset(str(tmp_path / 'a'), num_train=6, num_val=4, size=48, seed=3)
    assert os.path.getmtime(tmp_path / 'a/meta.json') == mtime


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='num_train=0'):
        generate_shapes_dataset(str(tmp_path), num_train=0)
    with pytest.raises(ValueError, match='size=8'):
        generate_shapes_dataset(str(tmp_path), size=8)


def test_dataset_class_and_train_vocabulary(tmp_path):
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    root = str(tmp_path / 'shapes')
    kw = dict(data_root=root, generate_cfg=dict(num_train=4, num_val=2, size=32),
              pipeline=[], data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'))
    ds = ShapesDataset(metainfo=dict(classes=TRAIN_CLASSES), **kw)
    assert len(ds) == 4 and ds.metainfo['classes'] == TRAIN_CLASSES
    # seen ids are a prefix of the evaluation ids: the label map is the identity on them
    lm = ds.metainfo['label_map']
    assert all(lm[i] == i for i in range(len(TRAIN_CLASSES)))
    full = ShapesDataset(**dict(kw, data_prefix=dict(img_path='img_dir/val',
                                                     seg_map_path='ann_dir/val')))
    assert full.metainfo['classes'] == EVAL_CLASSES and len(full) == 2


def test_quickstart_config_matches_package_vocabularies():
    cfg = Config.fromfile(os.path.join(ROOT, 'configs/quickstart/hclip_tiny_shapes.py'))
    assert tuple(cfg.train_classes) == TRAIN_CLASSES
    assert tuple(cfg.unseen_classes) == UNSEEN_CLASSES
    assert tuple(cfg.val_evaluator.seen_classes) == TRAIN_CLASSES
