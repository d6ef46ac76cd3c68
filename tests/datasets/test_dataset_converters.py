"""The benchmark converters on tiny fake downloads in the real raw formats.

Expected values are written out by hand from the documented rules
(../shared/DATASETS.md), not computed with the converters' own tables.
"""
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
CONVERTERS = ROOT / 'tools' / 'dataset_converters'
sys.path.insert(0, str(CONVERTERS))

import _common  # noqa: E402
import ade150  # noqa: E402
import ade847  # noqa: E402
import coco_stuff171  # noqa: E402
import pc59  # noqa: E402
import pc459  # noqa: E402
import voc20  # noqa: E402
import voc20b  # noqa: E402

CLASSNAMES = ROOT / 'mmseg_hclip' / 'data' / 'classnames'


def names(key):
    return json.loads((CLASSNAMES / f'{key}.json').read_text())


def run(module, argv, capsys=None):
    """Run a converter's CLI in-process; returns (exit code, stdout, stderr)."""
    code = _common.run_main(module.main, [str(a) for a in argv])
    if capsys is None:
        return code, '', ''
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_jpg(path, h=6, w=8, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path, quality=95)
    return path


def write_gray_png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8), mode='L').save(path)
    return path


def read_label(path):
    with Image.open(path) as img:
        return np.array(img)


# ---------------------------------------------------------------------------
# COCO-Stuff-171
# ---------------------------------------------------------------------------
# raw value (= COCO category id - 1) -> train id, by hand from the COCO id list
COCO_CASES = {
    0: 0,      # person
    1: 1,      # bicycle
    11: 255,   # unused slot (category 12)
    12: 11,    # stop sign (category 13)
    25: 255,   # unused slot (category 26)
    26: 24,    # backpack (category 27)
    89: 79,    # toothbrush (category 90)
    90: 255,   # unused slot (category 91)
    91: 80,    # banner (category 92), first stuff class
    181: 170,  # wood (category 182), last stuff class
    255: 255,  # unlabeled
}


@pytest.fixture
def coco_raw(tmp_path):
    raw = tmp_path / 'coco'
    raw_vals = np.array(list(COCO_CASES), dtype=np.uint8)
    mask = np.resize(raw_vals, (6, 8))
    write_gray_png(raw / 'stuffthingmaps_trainval2017' / 'val2017' / '000000000139.png', mask)
    write_jpg(raw / 'val2017' / '000000000139.jpg')
    write_gray_png(raw / 'stuffthingmaps_trainval2017' / 'val2017' / '000000000285.png',
                   np.full((6, 8), 91))
    write_jpg(raw / 'val2017' / '000000000285.jpg', seed=1)
    return raw, mask


def test_coco_stuff_values_and_layout(coco_raw, tmp_path, capsys):
    raw, mask = coco_raw
    out = tmp_path / 'out'
    code, stdout, err = run(coco_stuff171, [raw, '--out-dir', out, '--splits', 'val2017',
                                            '--nproc', 1, '--no-count-check'], capsys)
    assert code == 0, err
    label_path = out / 'annotations' / 'val2017' / '000000000139_labelTrainIds.png'
    label = read_label(label_path)
    assert label.dtype == np.uint8
    expected = np.vectorize(COCO_CASES.get)(mask)
    np.testing.assert_array_equal(label, expected)
    img = out / 'images' / 'val2017' / '000000000139.jpg'
    assert img.read_bytes() == (raw / 'val2017' / '000000000139.jpg').read_bytes()
    coco = names('coco')
    assert (coco[0], coco[11], coco[24], coco[79], coco[80], coco[170]) == (
        'person', 'stop sign', 'backpack', 'toothbrush', 'banner', 'wood')
    assert 'not the official 5000' in err  # subset warning
    assert '2 written' in stdout
    summary = json.loads((out / 'conversion_summary.json').read_text())
    assert summary['splits']['val2017']['written'] == 2
    assert summary['classes_seen_this_run'] == 7  # 0 1 11 24 79 80 170


def test_coco_stuff_count_check_and_bad_value(coco_raw, tmp_path, capsys):
    raw, mask = coco_raw
    out = tmp_path / 'out'
    code, _, err = run(coco_stuff171, [raw, '--out-dir', out, '--splits', 'val2017',
                                       '--nproc', 1], capsys)
    assert code == 2
    assert 'found 2 val2017 images' in err and 'expected 5000' in err
    assert '--no-count-check' in err
    assert not out.exists()  # refused before writing anything

    bad = mask.copy()
    bad[2, 3] = 200
    bad_path = write_gray_png(raw / 'stuffthingmaps_trainval2017' / 'val2017' /
                              '000000000139.png', bad)
    code, _, err = run(coco_stuff171, [raw, '--out-dir', out, '--splits', 'val2017',
                                       '--nproc', 1, '--no-count-check'], capsys)
    assert code == 2
    assert str(bad_path) in err and 'label value 200' in err


def test_coco_stuff_missing_input(tmp_path, capsys):
    raw = tmp_path / 'coco'
    write_jpg(raw / 'val2017' / '000000000139.jpg')
    code, _, err = run(coco_stuff171, [raw, '--out-dir', tmp_path / 'out', '--splits',
                                       'val2017'], capsys)
    assert code == 2
    assert str(raw / 'stuffthingmaps_trainval2017' / 'val2017') in err
    assert 'stuffthingmaps_trainval2017.zip' in err  # says where to get it

    code, _, err = run(coco_stuff171, [tmp_path / 'nowhere', '--out-dir', tmp_path / 'o'],
                       capsys)
    assert code == 2 and 'does not exist' in err


def test_resume_never_overwrites_and_cleans_partials(coco_raw, tmp_path, capsys):
    raw, _ = coco_raw
    out = tmp_path / 'out'
    argv = [raw, '--out-dir', out, '--splits', 'val2017', '--nproc', 1, '--no-count-check']
    assert run(coco_stuff171, argv, capsys)[0] == 0
    label_path = out / 'annotations' / 'val2017' / '000000000139_labelTrainIds.png'
    marker = b'finished output must survive a re-run'
    label_path.write_bytes(marker)
    # an interrupted run leaves a temporary file and one image unfinished
    other_img = out / 'images' / 'val2017' / '000000000285.jpg'
    other_img.unlink()
    partial = other_img.with_name(other_img.name + '.partial')
    partial.write_bytes(b'half')

    code, stdout, _ = run(coco_stuff171, argv, capsys)
    assert code == 0
    assert label_path.read_bytes() == marker
    assert other_img.is_file() and not partial.exists()
    summary = json.loads((out / 'conversion_summary.json').read_text())
    assert summary['splits']['val2017'] == dict(written=1, skipped=1, dropped=0)
    assert 'already finished' in stdout

    assert run(coco_stuff171, argv + ['--overwrite'], capsys)[0] == 0
    assert label_path.read_bytes() != marker
    assert read_label(label_path).dtype == np.uint8


# ---------------------------------------------------------------------------
#
# ---------------------------------------------------------------------------
def test_ade150_copies_raw_labels(tmp_path, capsys):
    raw = tmp_path / 'ADEChallengeData2016'
    ann = np.array([[0, 1, 150], [2, 0, 75]], dtype=np.uint8)
    write_gray_png(raw / 'annotations' / 'validation' / 'ADE_val_00000001.png', ann)
    write_jpg(raw / 'images' / 'validation' / 'ADE_val_00000001.jpg', 2, 3)
    out = tmp_path / 'ade150'
    code, stdout, err = run(ade150, [raw, '--out-dir', out, '--nproc', 1,
                                     '--no-count-check', '--image-mode', 'copy'], capsys)
    assert code == 0, err
    written = out / 'annotations' / 'validation' / 'ADE_val_00000001.png'
    # raw values kept: ADE20K150Dataset reduces them once at load time
    np.testing.assert_array_equal(read_label(written), ann)
    assert (out / 'images' / 'validation' / 'ADE_val_00000001.jpg').is_file()
    assert 'classes seen in the 1 image(s) written this run: 4 of 150' in stdout

    ann[1, 1] = 151
    write_gray_png(raw / 'annotations' / 'validation' / 'ADE_val_00000001.png', ann)
    code, _, err = run(ade150, [raw, '--out-dir', tmp_path / 'o2', '--nproc', 1,
                                '--no-count-check'], capsys)
    assert code == 2 and 'label value 151' in err and 'ADE_val_00000001.png' in err


def test_ade150_empty_split(tmp_path, capsys):
    raw = tmp_path / 'ADEChallengeData2016'
    (raw / 'images' / 'validation').mkdir(parents=True)
    (raw / 'annotations' / 'validation').mkdir(parents=True)
    code, _, err = run(ade150, [raw, '--out-dir', tmp_path / 'o', '--no-count-check'], capsys)
    assert code == 2 and "split 'validation' is empty" in err


# ---------------------------------------------------------------------------
#
# ---------------------------------------------------------------------------
def ade_ids_by_train_id():
    table = json.loads((CLASSNAMES / 'ade847_ade_ids.json').read_text())
    return {t['train_id']: t['ade_id'] for t in table}


def encode_ade_seg(class_ids, rng):
    """RGB *_seg.png content: R = id // 256 * 10 + noise(0-9), G = id % 256, B = instances."""
    class_ids = np.asarray(class_ids)
    r = class_ids // 256 * 10 + rng.integers(0, 10, class_ids.shape)
    g = class_ids % 256
    b = rng.integers(0, 255, class_ids.shape)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


@pytest.fixture
def ade847_raw(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / 'raw'
    release = root / 'ADE20K_2021_17_01'
    ade = ade_ids_by_train_id()
    # ADE ids whose train ids are 0 (wall = 2978), 255 (a valid class!), 300 and 846;
    # 0 is unlabeled; 5 is an ADE id outside the 847 table
    assert ade[0] == 2978
    small_ids = np.array([[ade[0], ade[255], ade[300], ade[846]],
                          [0, 5, ade[0], ade[846]],
                          [ade[255], ade[255], 0, ade[300]]])
    small_expected = np.array([[0, 255, 300, 846],
                               [65535, 65535, 0, 846],
                               [255, 255, 65535, 300]], dtype=np.uint16)
    folders, files = [], []

    def add(folder, filename, class_ids, h, w):
        d = release / folder
        write_jpg(d / filename, h, w, seed=len(files))
        Image.fromarray(encode_ade_seg(class_ids, rng)).save(
            d / filename.replace('.jpg', '_seg.png'))
        folders.append(f'ADE20K_2021_17_01/{folder}')
        files.append(filename)

    add('images/ADE/validation/urban/street', 'ADE_val_00000001.jpg', small_ids, 3, 4)
    # 600 x 700: short side 600 > 512 -> 512 x round(700 / 600 * 512) = 512 x 597
    big_ids = np.zeros((600, 700), dtype=np.int64)
    big_ids[:300] = ade[846]
    big_ids[300:, :350] = ade[255]
    add('images/ADE/validation/home/kitchen', 'ADE_val_00000002.jpg', big_ids, 600, 700)
    add('images/ADE/training/urban/street', 'ADE_train_00000001.jpg', small_ids, 3, 4)
    objectnames = [f'object {i}' for i in range(1, 3689)]
    with open(release / 'index_ade20k.pkl', 'wb') as f:
        pickle.dump(dict(folder=folders, filename=files, objectnames=objectnames,
                         scene=['street'] * len(files)), f)
    return release, small_expected


def test_ade847_values_resize_and_layout(ade847_raw, tmp_path, capsys):
    release, small_expected = ade847_raw
    out = tmp_path / 'ade847'
    code, stdout, err = run(ade847, [release, '--out-dir', out, '--nproc', 1,
                                     '--no-count-check'], capsys)
    assert code == 0, err
    ann_dir, img_dir = out / 'annotations' / 'validation', out / 'images' / 'validation'
    assert sorted(p.name for p in ann_dir.iterdir()) == ['ADE_val_00000001.png',
                                                         'ADE_val_00000002.png']
    assert sorted(p.name for p in img_dir.iterdir()) == ['ADE_val_00000001.jpg',
                                                         'ADE_val_00000002.jpg']
    small = read_label(ann_dir / 'ADE_val_00000001.png')
    assert small.dtype == np.uint16
    np.testing.assert_array_equal(small, small_expected)

    big = read_label(ann_dir / 'ADE_val_00000002.png')
    assert big.shape == (512, 597) and big.dtype == np.uint16
    assert set(np.unique(big)) == {255, 846, 65535}
    assert (big[260:, 300:] == 65535).all()
    assert (big[:250] == 846).all() and (big[260:, :290] == 255).all()
    with Image.open(img_dir / 'ADE_val_00000002.jpg') as img:
        assert img.size == (597, 512) and img.format == 'JPEG'
    with Image.open(img_dir / 'ADE_val_00000001.jpg') as img:
        assert img.size == (4, 3)  # short side <= 512: unchanged
    assert not (out / 'annotations' / 'training').exists()
    assert 'classes seen in the 2 image(s) written this run: 4 of 847' in stdout  # 0 255 300 846


def test_ade847_bad_id_and_missing_index(ade847_raw, tmp_path, capsys):
    release, _ = ade847_raw
    seg_path = release / 'images/ADE/validation/urban/street/ADE_val_00000001_seg.png'
    seg = np.array(Image.open(seg_path))
    seg[0, 0] = [150, 160, 0]  # 15 * 256 + 160 = 4000 > 3688 objectnames
    Image.fromarray(seg).save(seg_path)
    code, _, err = run(ade847, [release, '--out-dir', tmp_path / 'o', '--nproc', 1,
                                '--no-count-check'], capsys)
    assert code == 2 and 'label value 4000' in err and str(seg_path) in err

    (release / 'index_ade20k.pkl').unlink()
    code, _, err = run(ade847, [release, '--out-dir', tmp_path / 'o2'], capsys)
    assert code == 2 and 'index_ade20k.pkl' in err and 'ADE20K' in err


# ---------------------------------------------------------------------------
# PC-59 (Detail json with RLE masks)
# ---------------------------------------------------------------------------
def test_rle_string_codec_by_hand():
    # worked out by hand from the COCO mask API's string format
    assert pc59.rle_string_to_counts('321V1') == [3, 2, 1, 40]
    assert pc59.rle_string_to_counts('5:1H') == [5, 10, 1, 2]  # negative difference
    assert pc59.counts_to_rle_string([3, 2, 1, 40]) == '321V1'
    assert pc59.counts_to_rle_string([5, 10, 1, 2]) == '5:1H'
    # column-major: size 2x3, counts [1, 2, 3] -> pixels (0,0)=0, (1,0)=1, (0,1)=1, rest 0
    np.testing.assert_array_equal(
        pc59.decode_rle(dict(size=[2, 3], counts=[1, 2, 3])),
        [[0, 1, 0], [1, 0, 0]])


def test_rle_round_trip_random_masks():
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (5, 7), (31, 17), (64, 48)]:
        for density in (0.0, 0.3, 1.0):
            mask = (rng.random(shape) < density).astype(np.uint8)
            np.testing.assert_array_equal(pc59.decode_rle(pc59.encode_rle(mask)), mask)


def test_rle_matches_pycocotools_if_installed():
    mask_utils = pytest.importorskip('pycocotools.mask')
    rng = np.random.default_rng(4)
    mask = np.asfortranarray((rng.random((23, 37)) < 0.4).astype(np.uint8))
    ref = mask_utils.encode(mask)
    assert pc59.encode_rle(mask)['counts'] == ref['counts'].decode('ascii')
    np.testing.assert_array_equal(pc59.decode_rle(ref), mask)


def make_detail_json(voc, images, annos):
    detail = dict(images=images, annos_segmentation=annos,
                  categories=[dict(category_id=i, name=f'c{i}') for i in range(460)],
                  annos_occlusion=[], annos_boundary=[], annos_joints=[], parts=[], info={})
    (voc / 'trainval_merged.json').write_text(json.dumps(detail))


@pytest.fixture
def pc59_raw(tmp_path):
    voc = tmp_path / 'VOCdevkit' / 'VOC2010'
    h, w = 4, 5
    write_jpg(voc / 'JPEGImages' / '2008_000002.jpg', h, w)
    write_jpg(voc / 'JPEGImages' / '2008_000003.jpg', h, w, seed=1)

    def region(rows, cols):
        m = np.zeros((h, w), dtype=np.uint8)
        m[rows, cols] = 1
        return pc59.encode_rle(m)

    # painted in order; later entries overwrite earlier ones
    annos = [
        dict(id=i, image_id=image_id, category_id=cat, segmentation=region(rows, cols))
        for i, (image_id, cat, rows, cols) in enumerate([
            (2008000002, 2, slice(0, 4), slice(0, 5)),
            (2008000002, 458, slice(0, 2), slice(0, 2)),
            (2008000002, 19, slice(1, 3), slice(1, 3)),
            (2008000002, 1, slice(3, 4), slice(0, 5)),
            (2008000002, 0, slice(0, 1), slice(4, 5)),
            (2008000003, 9, slice(0, 4), slice(0, 5)),
        ], start=1)
    ]
    images = [dict(image_id=2008000002, file_name='2008_000002.jpg', height=h, width=w,
                   phase='val'),
              dict(image_id=2008000003, file_name='2008_000003.jpg', height=h, width=w,
                   phase='train')]
    make_detail_json(voc, images, annos)
    # by hand: 2 -> aeroplane 0, 458 -> wood 58, 19 -> bedclothes 3, 9 -> bag 1,
    # 1 (not one of the 59) -> 255, 0 (background) -> 255
    expected = np.array([[58, 58, 0, 0, 255],
                         [58, 3, 3, 0, 0],
                         [0, 3, 3, 0, 0],
                         [255, 255, 255, 255, 255]], dtype=np.uint8)
    return tmp_path, voc, expected


def test_pc59_values_and_layout(pc59_raw, capsys):
    tmp_path, voc, expected = pc59_raw
    pc = names('pc59')
    assert (pc[0], pc[1], pc[3], pc[58]) == ('aeroplane', 'bag', 'bedclothes', 'wood')
    out = tmp_path / 'pc59'
    # RAW_DIR may be the folder holding VOCdevkit
    code, _, err = run(pc59, [tmp_path, '--out-dir', out, '--nproc', 1, '--no-count-check',
                              '--json', voc / 'trainval_merged.json'], capsys)
    assert code == 0, err
    label = read_label(out / 'annotations' / 'val' / '2008_000002.png')
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, expected)
    assert sorted(p.name for p in (out / 'images' / 'val').iterdir()) == ['2008_000002.jpg']

    code, _, err = run(pc59, [voc, '--out-dir', tmp_path / 'o2', '--split', 'train',
                              '--nproc', 1, '--no-count-check'], capsys)
    assert code == 0, err
    assert (read_label(tmp_path / 'o2' / 'annotations' / 'train' / '2008_000003.png') == 1).all()


def test_pc59_bad_category_and_missing_json(pc59_raw, capsys):
    tmp_path, voc, _ = pc59_raw
    detail = json.loads((voc / 'trainval_merged.json').read_text())
    detail['annos_segmentation'][2]['category_id'] = 500
    (voc / 'trainval_merged.json').write_text(json.dumps(detail))
    code, _, err = run(pc59, [voc, '--out-dir', tmp_path / 'o', '--nproc', 1,
                              '--no-count-check'], capsys)
    assert code == 2 and 'label value 500' in err and '2008_000002' in err

    (voc / 'trainval_merged.json').unlink()
    code, _, err = run(pc59, [voc, '--out-dir', tmp_path / 'o'], capsys)
    assert code == 2 and 'trainval_merged.json' in err and 'Detail' in err


# ---------------------------------------------------------------------------
# PC-459 (.mat label maps)
# ---------------------------------------------------------------------------
@pytest.fixture
def pc459_raw(tmp_path):
    from scipy.io import savemat
    voc = tmp_path / 'VOC2010'
    context = tmp_path / 'context'
    (context / 'trainval').mkdir(parents=True)
    pc = names('pc459')
    (context / 'labels.txt').write_text(
        ''.join(f'{i}: {name}\n' for i, name in enumerate(pc, 1)))
    raw_maps = {
        '2008_000002': np.array([[0, 1, 256], [301, 459, 847 % 459]], dtype=np.uint16),
        '2008_000003': np.array([[5, 5, 5], [5, 5, 0]], dtype=np.uint16),
    }
    for key, lm in raw_maps.items():
        savemat(str(context / 'trainval' / f'{key}.mat'), dict(LabelMap=lm))
        write_jpg(voc / 'JPEGImages' / f'{key}.jpg', 2, 3)
    split = tmp_path / 'val_subset.txt'
    split.write_text('2008_000002\n2008_000003\n')
    return tmp_path, voc, context, split


def test_pc459_values_and_layout(pc459_raw, capsys):
    tmp_path, voc, context, split = pc459_raw
    out = tmp_path / 'pc459'
    code, stdout, err = run(pc459, [voc, '--context-dir', context, '--split-file', split,
                                    '--out-dir', out, '--nproc', 1, '--no-count-check'], capsys)
    assert code == 0, err
    label = read_label(out / 'annotations' / 'val' / '2008_000002.png')
    assert label.dtype == np.uint16
    # raw 0 -> 65535, v -> v - 1 (388 = 847 % 459)
    np.testing.assert_array_equal(label, [[65535, 0, 255], [300, 458, 387]])
    np.testing.assert_array_equal(read_label(out / 'annotations' / 'val' / '2008_000003.png'),
                                  [[4, 4, 4], [4, 4, 65535]])
    assert sorted(p.name for p in (out / 'images' / 'val').iterdir()) == [
        '2008_000002.jpg', '2008_000003.jpg']
    assert 'not the official 5104' in err


def test_pc459_bad_value_and_incomplete_input(pc459_raw, capsys):
    from scipy.io import savemat
    tmp_path, voc, context, split = pc459_raw
    mat = context / 'trainval' / '2008_000003.mat'
    savemat(str(mat), dict(LabelMap=np.array([[460, 1]], dtype=np.uint16)))
    code, _, err = run(pc459, [voc, '--context-dir', context, '--split-file', split,
                               '--out-dir', tmp_path / 'o', '--nproc', 1,
                               '--no-count-check'], capsys)
    assert code == 2 and 'label value 460' in err and str(mat) in err

    # default split = the package's 5,104 validation ids: most .mat files are missing
    code, _, err = run(pc459, [voc, '--context-dir', context, '--out-dir', tmp_path / 'o'],
                       capsys)
    assert code == 2
    assert '5102 PASCAL Context label maps' in err and '2008_000007.mat' in err
    assert 'trainval.tar.gz' in err

    (context / 'labels.txt').unlink()
    code, _, err = run(pc459, [voc, '--context-dir', context, '--out-dir', tmp_path / 'o'],
                       capsys)
    assert code == 2 and 'labels.txt' in err


# ---------------------------------------------------------------------------
# PAS-20 / PAS-20b
# ---------------------------------------------------------------------------
VOC_PALETTE = [0] * 768
for _i in range(256):
    _c, _r, _g, _b = _i, 0, 0, 0
    for _j in range(8):
        _r |= ((_c >> 0) & 1) << (7 - _j)
        _g |= ((_c >> 1) & 1) << (7 - _j)
        _b |= ((_c >> 2) & 1) << (7 - _j)
        _c >>= 3
    VOC_PALETTE[3 * _i:3 * _i + 3] = [_r, _g, _b]


def write_palette_png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.asarray(arr, dtype=np.uint8), mode='P')
    img.putpalette(VOC_PALETTE)
    img.save(path)


@pytest.fixture
def voc_raw(tmp_path):
    voc = tmp_path / 'VOCdevkit' / 'VOC2012'
    masks = {
        '2007_000033': np.array([[0, 1, 15], [20, 255, 0]]),
        '2007_000042': np.array([[0, 0, 255], [255, 0, 0]]),  # background + boundary only
        '2007_000061': np.array([[7, 7, 7], [7, 7, 7]]),
    }
    for key, m in masks.items():
        write_palette_png(voc / 'SegmentationClass' / f'{key}.png', m)
        write_jpg(voc / 'JPEGImages' / f'{key}.jpg', 2, 3)
    split = voc / 'ImageSets' / 'Segmentation' / 'val.txt'
    split.parent.mkdir(parents=True)
    split.write_text('\n'.join(masks) + '\n')
    return tmp_path, voc


def test_voc20_and_voc20b_values(voc_raw, capsys):
    tmp_path, voc = voc_raw
    out20, out20b = tmp_path / 'voc20', tmp_path / 'voc20b'
    code, stdout, err = run(voc20, [voc, '--out-dir', out20, '--nproc', 1,
                                    '--no-count-check'], capsys)
    assert code == 0, err
    ann = out20 / 'annotations' / 'val'
    np.testing.assert_array_equal(read_label(ann / '2007_000033.png'),
                                  [[255, 0, 14], [19, 255, 255]])
    np.testing.assert_array_equal(read_label(ann / '2007_000061.png'), np.full((2, 3), 6))
    # the background-only image is dropped, and counted
    assert sorted(p.name for p in ann.iterdir()) == ['2007_000033.png', '2007_000061.png']
    assert sorted(p.name for p in (out20 / 'images' / 'val').iterdir()) == [
        '2007_000033.jpg', '2007_000061.jpg']
    assert '2 written' in stdout and '1 dropped' in stdout

    # PAS-20b, through two worker processes
    code, stdout, err = run(voc20b, [tmp_path, '--out-dir', out20b, '--nproc', 2,
                                     '--no-count-check'], capsys)
    assert code == 0, err
    ann = out20b / 'annotations' / 'val'
    np.testing.assert_array_equal(read_label(ann / '2007_000033.png'),
                                  [[20, 0, 14], [19, 255, 20]])
    np.testing.assert_array_equal(read_label(ann / '2007_000042.png'),
                                  [[20, 20, 255], [255, 20, 20]])
    assert len(list(ann.iterdir())) == 3
    voc = names('voc20')
    assert (voc[0], voc[6], voc[14], voc[19]) == ('aeroplane', 'car', 'person', 'tvmonitor')


def test_voc_bad_value_empty_split_and_missing(voc_raw, capsys):
    tmp_path, voc = voc_raw
    bad = voc / 'SegmentationClass' / '2007_000061.png'
    write_palette_png(bad, [[21, 0]])
    # the error raised inside a worker process reaches the user intact
    code, _, err = run(voc20, [voc, '--out-dir', tmp_path / 'o', '--nproc', 2,
                               '--no-count-check'], capsys)
    assert code == 2 and 'label value 21' in err and str(bad) in err

    (voc / 'ImageSets' / 'Segmentation' / 'val.txt').write_text('')
    code, _, err = run(voc20b, [voc, '--out-dir', tmp_path / 'o', '--no-count-check'], capsys)
    assert code == 2 and "split 'val' is empty" in err

    code, _, err = run(voc20, [tmp_path / 'VOCdevkit', '--out-dir', tmp_path / 'o',
                               '--split', 'train'], capsys)
    assert code == 2 and 'train.txt' in err and 'VOCtrainval_11-May-2012.tar' in err


def test_cli_script_runs_standalone(voc_raw, tmp_path):
    """The scripts work as ``python tools/dataset_converters/<name>.py``."""
    import subprocess
    _, voc = voc_raw
    env = dict(os.environ, OMP_NUM_THREADS='1')
    ok = subprocess.run([sys.executable, str(CONVERTERS / 'voc20b.py'), str(voc), '--out-dir',
                         str(tmp_path / 'cli'), '--nproc', '1', '--no-count-check'],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / 'cli' / 'annotations' / 'val' / '2007_000042.png').is_file()
    bad = subprocess.run([sys.executable, str(CONVERTERS / 'voc20b.py'), str(voc), '--out-dir',
                          str(tmp_path / 'cli2')], capture_output=True, text=True, env=env,
                         timeout=120)
    assert bad.returncode == 2
    assert 'expected 1449' in bad.stderr and 'Traceback' not in bad.stderr
