"""Labels are validated as training validates them, in every pipeline of the H-CLIP datasets:
bad values, channels and sizes name the file when loaded; an empty folder or a missing label
file fails at construction, naming the folders and the expected layout."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import mmseg_hclip  # noqa: F401  (registers everything)
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

from mmseg_hclip.models.losses import OneHotBCELoss

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / 'configs' / '_base_' / 'datasets'


@pytest.fixture(autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')


def write_pair(root, stem, label, image_hw=None, split='val', label_bgr=False):
    """images/<split>/<stem>.jpg and annotations/<split>/<stem>.png."""
    (root / 'images' / split).mkdir(parents=True, exist_ok=True)
    (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
    h, w = image_hw or label.shape[:2]
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(root / 'images' / split /
                                                          f'{stem}.jpg')
    if label is not None:
        assert cv2.imwrite(str(root / 'annotations' / split / f'{stem}.png'), label)


def pc59(root, which='test', **overrides):
    """PascalContext59Dataset (59 classes, ignore 255) built from its base config."""
    cfg = Config.fromfile(str(CONFIGS / 'pc59.py'))
    ds_cfg = cfg.test_dataloader.dataset
    ds_cfg.data_root = str(root)
    if which == 'train':
        ds_cfg.pipeline = cfg.train_pipeline
    ds_cfg.update(overrides)
    return DATASETS.build(ds_cfg)


# ---------------------------------------------------------------- label values (probe #2)
def test_out_of_range_values_name_the_file_in_test_and_train_pipelines(tmp_path):
    label = np.zeros((40, 50), np.uint8)
    label[:5] = 255  # the ignore index: fine
    label[10:12, :] = 59  # one past the last class
    label[20, :3] = 77
    write_pair(tmp_path, 'bad', label)
    for which in ('test', 'train'):
        dataset = pc59(tmp_path, which)
        with pytest.raises(ValueError) as err:
            dataset[0]
        msg = str(err.value)
        assert 'bad.png' in msg and '59 (100 px)' in msg and '77 (3 px)' in msg, msg
        assert '0..58' in msg and 'ignore index 255' in msg, msg


def test_the_rule_is_the_training_losses_rule(tmp_path):
    """A label the check accepts, the loss accepts; a label the loss refuses, the check
    refuses (the loss is the independent reference)."""
    from mmseg_hclip.datasets import check_label_map
    loss = OneHotBCELoss()
    logits = torch.zeros(1, 5, 2, 3)
    for values, ok in (([0, 4, 255], True), ([0, 5, 255], False), ([3, 3, 3], True),
                       ([0, 254, 1], False)):
        seg = np.array([values, values], np.uint8)
        try:
            loss(logits, torch.from_numpy(seg.astype(np.int64))[None], ignore_index=255)
            loss_ok = True
        except ValueError:
            loss_ok = False
        try:
            check_label_map(seg, 'x.png', num_classes=5, ignore_index=255)
            check_ok = True
        except ValueError:
            check_ok = False
        assert loss_ok == check_ok == ok, values


def test_valid_labels_load_unchanged(tmp_path):
    label = np.arange(40 * 50).reshape(40, 50) % 59
    label[0] = 255
    write_pair(tmp_path, 'good', label.astype(np.uint8))
    gt = pc59(tmp_path)[0]['data_samples'].gt_sem_seg.data.numpy()[0]
    np.testing.assert_array_equal(gt, label)


def test_reduce_zero_label_reports_file_values(tmp_path):
    """A-150 labels are reduced by one on load; the message gives the value in the file."""
    raw = np.zeros((8, 8), np.uint8)
    raw[0, 0] = 151  # 150 classes stored 1..150
    (tmp_path / 'images' / 'validation').mkdir(parents=True)
    (tmp_path / 'annotations' / 'validation').mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(
        tmp_path / 'images' / 'validation' / 'a.jpg')
    Image.fromarray(raw).save(tmp_path / 'annotations' / 'validation' / 'a.png')
    cfg = Config.fromfile(str(CONFIGS / 'ade150.py'))
    cfg.test_dataloader.dataset.data_root = str(tmp_path)
    with pytest.raises(ValueError, match=r'150 \(1 px\) \(after reduce_zero_label, i.e. '
                                         r'file values 151\)'):
        DATASETS.build(cfg.test_dataloader.dataset)[0]


def test_class_subset_counts_the_subset(tmp_path):
    """With metainfo classes = a subset, dropped classes become ignore; ids past the full
    class list are refused."""
    label = np.array([[0, 1, 2, 58]] * 4, np.uint8)
    write_pair(tmp_path, 'a', label)
    from mmseg_hclip.datasets import PascalContext59Dataset
    names = PascalContext59Dataset.METAINFO['classes']
    ds = pc59(tmp_path, metainfo=dict(classes=[names[2], names[58]]))
    np.testing.assert_array_equal(ds[0]['data_samples'].gt_sem_seg.data.numpy()[0],
                                  [[255, 255, 0, 1]] * 4)


# ---------------------------------------------------------------- channels and size (#5)
def test_label_of_another_size_names_both_files(tmp_path):
    write_pair(tmp_path, 'img7', np.zeros((30, 40), np.uint8), image_hw=(32, 40))
    with pytest.raises(ValueError) as err:
        pc59(tmp_path)[0]
    msg = str(err.value)
    assert 'img7.png' in msg and 'img7.jpg' in msg and '30x40' in msg and '32x40' in msg
    assert 'nearest' in msg


def test_three_channel_label_with_mmseg_loader(tmp_path):
    """MMSeg's LoadAnnotations keeps an RGB label as [H, W, 3]; the dataset's check stops it."""
    from mmseg_hclip.quickstart import ShapesDataset
    root = tmp_path / 'shapes'
    (root / 'img_dir' / 'val').mkdir(parents=True)
    (root / 'ann_dir' / 'val').mkdir(parents=True)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / 'img_dir' / 'val' / 'a.png')
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / 'ann_dir' / 'val' / 'a.png')
    ds = ShapesDataset(generate=False, data_root=str(root),
                       data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
                       pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                                 dict(type='PackSegInputs')])
    assert [type(t).__name__ for t in ds.pipeline.transforms] == [
        'LoadImageFromFile', 'LoadAnnotations', 'CheckSegLabels', 'PackSegInputs']
    with pytest.raises(ValueError, match=r'a\.png: a label map must have one channel .*'
                                         r'\(16, 16, 3\)'):
        ds[0]


def test_check_is_not_inserted_twice_and_is_usable_alone(tmp_path):
    from mmseg_hclip.datasets import CheckSegLabels
    write_pair(tmp_path, 'a', np.zeros((4, 4), np.uint8))
    ds = pc59(tmp_path, pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations16'),
                                  dict(type='CheckSegLabels', num_classes=59)])
    assert [type(t).__name__ for t in ds.pipeline.transforms] == [
        'LoadImageFromFile', 'LoadAnnotations16', 'CheckSegLabels']
    check = CheckSegLabels(num_classes=2)
    with pytest.raises(ValueError, match='x.png: label values 2 '):
        check(dict(gt_seg_map=np.array([[0, 2]], np.uint8), seg_map_path='x.png'))
    assert check(dict(gt_seg_map=np.array([[0, 255]], np.uint8), seg_map_path='x.png'))


def test_16bit_dataset_with_the_8bit_loader_is_refused(tmp_path):
    write_pair(tmp_path, 'a', np.zeros((4, 4), np.uint8), split='validation')
    cfg = Config.fromfile(str(CONFIGS / 'ade847.py'))
    ds_cfg = cfg.test_dataloader.dataset
    ds_cfg.data_root = str(tmp_path)
    ds_cfg.pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]
    with pytest.raises(ValueError, match="wraps every id above 255; use dict.type='Load"):
        DATASETS.build(ds_cfg)


# ---------------------------------------------------------------- construction (#5)
def test_empty_folder_names_the_layout(tmp_path):
    (tmp_path / 'images' / 'val').mkdir(parents=True)
    with pytest.raises(ValueError) as err:
        pc59(tmp_path)
    msg = str(err.value)
    assert f"no image ending in '.jpg' under {tmp_path}/images/val" in msg, msg
    assert f'{tmp_path}/annotations/val/<name>.png' in msg and 'data_prefix' in msg


def test_missing_image_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=f'image folder {tmp_path}/images/val does '
                                                'not exist; expected every image as'):
        pc59(tmp_path)


def test_missing_label_found_at_construction(tmp_path):
    write_pair(tmp_path, 'a', np.zeros((4, 4), np.uint8))
    write_pair(tmp_path, 'b', None, image_hw=(4, 4))
    with pytest.raises(FileNotFoundError) as err:
        pc59(tmp_path)
    msg = str(err.value)
    assert '1 of 2 images have no label file' in msg
    assert f'{tmp_path}/images/val/b.jpg -> {tmp_path}/annotations/val/b.png' in msg
    # a pipeline that reads no labels needs none
    assert len(pc59(tmp_path, pipeline=[dict(type='LoadImageFromFile')])) == 2


def test_missing_label_folder(tmp_path):
    write_pair(tmp_path, 'a', np.zeros((4, 4), np.uint8))
    with pytest.raises(FileNotFoundError, match='the folder .*/labels does not exist'):
        pc59(tmp_path, data_prefix=dict(img_path='images/val', seg_map_path='labels'))


def test_construction_check_lists_each_folder_once(tmp_path, monkeypatch):
    """One directory listing per label folder, not one file-system call per image."""
    import os

    import mmseg_hclip.datasets.benchmark_base as base
    img_dir, ann_dir = tmp_path / 'images' / 'val', tmp_path / 'annotations' / 'val'
    img_dir.mkdir(parents=True)
    ann_dir.mkdir(parents=True)
    for i in range(500):
        (img_dir / f'{i:06d}.jpg').touch()
        (ann_dir / f'{i:06d}.png').touch()
    calls, original = [], os.listdir

    def listdir(path):
        calls.append(path)
        return original(path)

    monkeypatch.setattr(base.os, 'listdir', listdir)
    assert len(pc59(tmp_path)) == 500
    assert calls == [str(ann_dir)]
