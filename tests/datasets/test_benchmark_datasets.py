"""Registered benchmark datasets, LoadAnnotations16 and the base dataset configs."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import mmseg_hclip  # noqa: F401  (registers everything)
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.datasets import ADE20KDataset, COCOStuffDataset
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import DATASETS, METRICS, TRANSFORMS

from mmseg_hclip.datasets import LoadAnnotations16, load_classnames

ROOT = Path(__file__).resolve().parents[2]
CLASSNAMES = ROOT / 'mmseg_hclip' / 'data' / 'classnames'
CONFIGS = ROOT / 'configs' / '_base_' / 'datasets'

# registered name, json key, number of classes, ignore index, base config
BENCHMARKS = [
    ('HCLIPCOCOStuffDataset', 'coco', 171, 255, 'coco_stuff171'),
    ('ADE20K150Dataset', 'ade150', 150, 255, 'ade150'),
    ('ADE20K847Dataset', 'ade847', 847, 65535, 'ade847'),
    ('PascalContext59Dataset', 'pc59', 59, 255, 'pc59'),
    ('PascalContext459Dataset', 'pc459', 459, 65535, 'pc459'),
    ('PascalVOC20Dataset', 'voc20', 20, 255, 'voc20'),
    ('PascalVOC20bDataset', 'voc20b', 59, 255, 'voc20b'),
]


@pytest.fixture(autouse=True)
def mmseg_scope():
    init_default_scope('mmseg')


@pytest.mark.parametrize('name,key,num,ignore,cfg', BENCHMARKS)
def test_metainfo_classes_palette_ignore(name, key, num, ignore, cfg):
    cls = DATASETS.get(name)
    assert cls is not None, f'{name} is not registered'
    with open(CLASSNAMES / f'{key}.json', encoding='utf-8') as f:
        expected = json.load(f)
    classes = cls.METAINFO['classes']
    assert len(classes) == num
    assert list(classes) == expected  # verbatim, synonyms and spaces included
    assert list(load_classnames(key)) == expected
    palette = cls.METAINFO['palette']
    assert len(palette) == num
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in palette)
    assert cls.METAINFO['ignore_index'] == ignore
    if ignore == 65535:
        assert 255 < num  # 255 is a real class id here, never an ignore value


def test_names_details():
    assert load_classnames('ade847')[1] == 'building, edifice'
    assert load_classnames('ade150')[7] == 'bed '
    voc20b = load_classnames('voc20b')
    assert list(voc20b[:20]) == list(load_classnames('voc20'))
    assert set(voc20b[20:]) <= set(load_classnames('pc59'))
    assert DATASETS.get('PascalVOC20bDataset').METAINFO['background_index'] == 20


def test_reused_mmseg_conventions_match():
    """The two reused MMSeg classes have exactly the benchmark names and files."""
    assert list(COCOStuffDataset.METAINFO['classes']) == list(load_classnames('coco'))
    assert list(ADE20KDataset.METAINFO['classes']) == list(load_classnames('ade150'))
    assert issubclass(DATASETS.get('HCLIPCOCOStuffDataset'), COCOStuffDataset)
    assert issubclass(DATASETS.get('ADE20K150Dataset'), ADE20KDataset)


# ---------------------------------------------------------------------------
# 16-bit loading through the configured test pipeline
# ---------------------------------------------------------------------------
VALUES_16 = np.array([[0, 255, 300, 846], [65535, 846, 300, 0]], dtype=np.uint16)


def write_tree(root, split, stem, label, suffix='.png'):
    img_dir = root / 'images' / split
    ann_dir = root / 'annotations' / split
    img_dir.mkdir(parents=True, exist_ok=True)
    ann_dir.mkdir(parents=True, exist_ok=True)
    h, w = label.shape
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(img_dir / f'{stem}.jpg')
    if suffix == '.tif':
        import tifffile
        tifffile.imwrite(ann_dir / f'{stem}.tif', label)
    else:
        assert cv2.imwrite(str(ann_dir / f'{stem}{suffix}'), label)


def build_from_config(cfg_name, data_root, **dataset_overrides):
    cfg = Config.fromfile(str(CONFIGS / f'{cfg_name}.py'))
    ds_cfg = cfg.test_dataloader.dataset
    ds_cfg.data_root = str(data_root)
    ds_cfg.update(dataset_overrides)
    return cfg, DATASETS.build(ds_cfg)


@pytest.mark.parametrize('cfg_name,split', [('ade847', 'validation'), ('pc459', 'val')])
@pytest.mark.parametrize('suffix', ['.png', '.tif'])
def test_16bit_values_survive_the_test_pipeline(tmp_path, cfg_name, split, suffix):
    # the last class id of the benchmark (846 for A-847, 458 for PC-459): in range
    values = np.where(VALUES_16 == 846, 846 if cfg_name == 'ade847' else 458,
                      VALUES_16).astype(np.uint16)
    write_tree(tmp_path, split, 'img_0001', values, suffix)
    overrides = dict(seg_map_suffix='.tif') if suffix == '.tif' else {}
    cfg, dataset = build_from_config(cfg_name, tmp_path, **overrides)
    assert [t['type'] for t in cfg.test_pipeline] == [
        'LoadImageFromFile', 'PillowResizeShortestEdge', 'LoadAnnotations16', 'PackSegInputs']
    assert cfg.test_evaluator.ignore_index == 65535 == dataset.ignore_index
    assert dataset.metainfo['ignore_index'] == 65535
    assert len(dataset) == 1
    sample = dataset[0]['data_samples']
    gt = sample.gt_sem_seg.data.numpy()[0]
    np.testing.assert_array_equal(gt, values.astype(np.int64))
    assert sample.ori_shape == values.shape


def test_mmseg_loader_would_corrupt_16bit(tmp_path):
    """Why LoadAnnotations16 exists: MMSeg's loader wraps 300 -> 44, 65535 -> 255."""
    path = tmp_path / 'l.png'
    cv2.imwrite(str(path), VALUES_16)
    results = dict(seg_map_path=str(path), reduce_zero_label=False, seg_fields=[])
    old = LoadAnnotations()(dict(results, seg_fields=[]))['gt_seg_map']
    new = LoadAnnotations16()(dict(results, seg_fields=[]))['gt_seg_map']
    assert old[0, 2] == 44 and old[1, 0] == 255
    assert new.dtype == np.uint16
    np.testing.assert_array_equal(new, VALUES_16)


@pytest.mark.parametrize('reduce_zero_label', [False, True])
def test_uint8_maps_load_bit_identical_to_mmseg(tmp_path, reduce_zero_label):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 256, (7, 9)).astype(np.uint8)
    label[0, :4] = [0, 1, 254, 255]
    path = tmp_path / 'l.png'
    Image.fromarray(label).save(path)
    results = dict(seg_map_path=str(path), reduce_zero_label=reduce_zero_label)
    old = LoadAnnotations()(dict(results, seg_fields=[]))['gt_seg_map']
    new = LoadAnnotations16()(dict(results, seg_fields=[]))['gt_seg_map']
    assert new.dtype == old.dtype == np.uint8
    np.testing.assert_array_equal(new, old)


def test_reduce_zero_label_on_16bit_keeps_ignore(tmp_path):
    path = tmp_path / 'l.png'
    cv2.imwrite(str(path), np.array([[0, 1, 300, 65535]], dtype=np.uint16))
    out = LoadAnnotations16()(dict(seg_map_path=str(path), reduce_zero_label=True,
                                   ignore_index=65535, seg_fields=[]))['gt_seg_map']
    np.testing.assert_array_equal(out, [[65535, 0, 299, 65535]])


def test_transform_is_registered_and_rejects_rgb(tmp_path):
    assert TRANSFORMS.get('LoadAnnotations16') is LoadAnnotations16
    path = tmp_path / 'rgb.png'
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path)
    with pytest.raises(ValueError, match='one channel'):
        LoadAnnotations16()(dict(seg_map_path=str(path), reduce_zero_label=False,
                                 seg_fields=[]))


def test_ade150_reduces_raw_labels_once(tmp_path):
    raw = np.array([[0, 1, 150, 75]], dtype=np.uint8)
    write_tree(tmp_path, 'validation', 'ADE_val_00000001', raw)
    _, dataset = build_from_config('ade150', tmp_path)
    gt = dataset[0]['data_samples'].gt_sem_seg.data.numpy()[0]
    np.testing.assert_array_equal(gt, [[255, 0, 149, 74]])


def test_class_subset_maps_dropped_classes_to_ignore(tmp_path):
    write_tree(tmp_path, 'validation', 'img', VALUES_16)
    names = load_classnames('ade847')
    subset = [names[846], names[255]]
    _, dataset = build_from_config('ade847', tmp_path, metainfo=dict(classes=subset))
    assert dataset.label_map[300] == 65535 and dataset.label_map[255] == 1
    assert len(dataset.metainfo['palette']) == 2
    gt = dataset[0]['data_samples'].gt_sem_seg.data.numpy()[0]
    np.testing.assert_array_equal(gt, [[65535, 1, 65535, 0], [65535, 0, 65535, 65535]])


def test_coco_train_pipeline_runs(tmp_path):
    """Short side 384, random 384 crop, label values stay within the input's."""
    label = np.zeros((300, 500), np.uint8)
    label[:, 250:] = 170
    label[:20] = 255
    root = tmp_path
    (root / 'images' / 'train2017').mkdir(parents=True)
    (root / 'annotations' / 'train2017').mkdir(parents=True)
    Image.fromarray(np.full((300, 500, 3), 127, np.uint8)).save(
        root / 'images' / 'train2017' / '000000000009.jpg')
    Image.fromarray(label).save(root / 'annotations' / 'train2017' /
                                '000000000009_labelTrainIds.png')
    cfg = Config.fromfile(str(CONFIGS / 'coco_stuff171.py'))
    ds_cfg = cfg.train_dataloader.dataset
    ds_cfg.data_root = str(root)
    dataset = DATASETS.build(ds_cfg)
    assert len(dataset) == 1
    out = dataset[0]
    assert tuple(out['inputs'].shape) == (3, 384, 384)
    gt = out['data_samples'].gt_sem_seg.data.numpy()
    assert gt.shape == (1, 384, 384)
    assert set(np.unique(gt)) <= {0, 170, 255}
    resize = [t for t in cfg.train_pipeline if t['type'] == 'PillowResizeShortestEdge'][0]
    assert (resize['scale'], resize['max_size']) == (384, 1333)


@pytest.mark.parametrize('name,key,num,ignore,cfg_name', BENCHMARKS)
def test_base_configs(name, key, num, ignore, cfg_name):
    cfg = Config.fromfile(str(CONFIGS / f'{cfg_name}.py'))
    for loader in ('val_dataloader', 'test_dataloader'):
        ds = cfg[loader].dataset
        assert ds.type == name
        assert ds.data_root == f'data/{cfg_name}'
        assert [t['type'] for t in ds.pipeline] == [
            'LoadImageFromFile', 'PillowResizeShortestEdge', 'LoadAnnotations16',
            'PackSegInputs']
    assert cfg.dataset_type == name and cfg.ignore_index == ignore
    assert cfg.test_evaluator.ignore_index == ignore
    # every benchmark trains on COCO-Stuff-171 (the open-vocabulary protocol)
    assert cfg.train_dataloader.dataset.type == 'HCLIPCOCOStuffDataset'
    assert cfg.train_dataloader.dataset.data_root == 'data/coco_stuff171'
    # more than 256 classes: IoUMetric16 keeps class ids > 255 in the PNGs of --out
    expected_metric = {'voc20b': 'BackgroundMappedIoUMetric', 'ade847': 'IoUMetric16',
                       'pc459': 'IoUMetric16'}.get(key, 'ReferenceIoUMetric')
    assert cfg.test_evaluator.type == expected_metric
    assert METRICS.get(expected_metric) is not None


def test_converter_output_feeds_the_configs(tmp_path, capsys):
    """Converter layout == what the base configs read (PAS-20b and PC-459)."""
    import sys
    sys.path.insert(0, str(ROOT / 'tools' / 'dataset_converters'))
    import _common
    import pc459
    import voc20b
    from .test_dataset_converters import write_jpg, write_palette_png
    from scipy.io import savemat

    voc = tmp_path / 'VOCdevkit' / 'VOC2012'
    write_palette_png(voc / 'SegmentationClass' / '2007_000033.png', [[0, 1, 255]])
    write_jpg(voc / 'JPEGImages' / '2007_000033.jpg', 1, 3)
    (voc / 'ImageSets' / 'Segmentation').mkdir(parents=True)
    (voc / 'ImageSets' / 'Segmentation' / 'val.txt').write_text('2007_000033\n')
    assert _common.run_main(voc20b.main, [str(voc), '--out-dir', str(tmp_path / 'voc20b'),
                                          '--nproc', '1', '--no-count-check']) == 0
    _, dataset = build_from_config('voc20b', tmp_path / 'voc20b')
    gt = dataset[0]['data_samples'].gt_sem_seg.data.numpy()[0]
    np.testing.assert_array_equal(gt, [[20, 0, 255]])

    voc10 = tmp_path / 'VOC2010'
    (voc10 / 'trainval').mkdir(parents=True)
    (voc10 / 'labels.txt').write_text(''.join(f'{i}: c{i}\n' for i in range(1, 460)))
    savemat(str(voc10 / 'trainval' / '2008_000002.mat'),
            dict(LabelMap=np.array([[0, 256, 301, 459]], dtype=np.uint16)))
    write_jpg(voc10 / 'JPEGImages' / '2008_000002.jpg', 1, 4)
    split = tmp_path / 'ids.txt'
    split.write_text('2008_000002\n')
    assert _common.run_main(pc459.main, [str(voc10), '--split-file', str(split), '--out-dir',
                                         str(tmp_path / 'pc459'), '--nproc', '1',
                                         '--no-count-check']) == 0
    _, dataset = build_from_config('pc459', tmp_path / 'pc459')
    gt = dataset[0]['data_samples'].gt_sem_seg.data.numpy()[0]
    np.testing.assert_array_equal(gt, [[65535, 255, 300, 458]])
    capsys.readouterr()
