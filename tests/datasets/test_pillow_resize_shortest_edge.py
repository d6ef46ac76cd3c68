"""PillowResizeShortestEdge: detectron2's ResizeShortestEdge as the reference pipeline uses it
(size rule, Pillow's antialiased bilinear resize of the image, torch-nearest labels)."""
import cv2
import numpy as np
import pytest
from mmseg.registry import TRANSFORMS
from PIL import Image

from mmseg_hclip.datasets.transforms import PillowResizeShortestEdge


@pytest.mark.parametrize('hw, scale, max_size, expected', [
    ((480, 640), 640, 2560, (640, 853)),    # 640 * 4 / 3 = 853.3
    ((427, 640), 384, 1333, (384, 576)),    # 640 * 384 / 427 = 575.55
    ((640, 427), 384, 1333, (576, 384)),
    ((200, 1000), 384, 1333, (267, 1333)),  # long side capped: 384 * 1333 / 1920 = 266.6
    ((500, 3000), 640, 2560, (427, 2560)),  # 640 * 2560 / 3840 = 426.67
    ((640, 640), 640, 2560, (640, 640)),
])
def test_output_size_rule(hw, scale, max_size, expected):
    t = PillowResizeShortestEdge(scale=scale, max_size=max_size)
    assert t.output_size(*hw) == expected
    out = t(dict(img=np.zeros((*hw, 3), np.uint8)))
    assert out['img'].shape == (*expected, 3) and out['img_shape'] == expected
    assert out['scale'] == expected[::-1] and out['keep_ratio']
    assert out['scale_factor'] == pytest.approx((expected[1] / hw[1], expected[0] / hw[0]))


@pytest.mark.parametrize('hw, scale', [((64, 96), 16), ((20, 30), 50)])
def test_image_pixels_are_pillows_bilinear(hw, scale):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)
    t = TRANSFORMS.build(dict(type='PillowResizeShortestEdge', scale=scale, max_size=10000))
    out = t(dict(img=img.copy()))['img']
    h, w = t.output_size(*hw)
    expected = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.uint8
    if scale < min(hw):  # shrinking: Pillow filters (antialiasing), OpenCV's bilinear does not
        plain = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        assert np.abs(out.astype(int) - plain.astype(int)).mean() > 5


def test_labels_resized_as_torch_nearest():
    """detectron2 resizes label maps as float64 with torch's 'nearest': source index
    floor(i * in / out)."""
    seg = (np.arange(6)[:, None] * 10 + np.arange(10)[None]).astype(np.uint16) + 1000
    seg[0, 0] = 65535
    results = dict(img=np.zeros((6, 10, 3), np.uint8), gt_seg_map=seg.copy(),
                   seg_fields=['gt_seg_map'])
    out = PillowResizeShortestEdge(scale=4, max_size=100)(results)['gt_seg_map']
    rows, cols = [0, 1, 3, 4], [0, 1, 2, 4, 5, 7, 8]  # floor(i * 6 / 4), floor(j * 10 / 7)
    np.testing.assert_array_equal(out, seg[np.ix_(rows, cols)])
    assert out.dtype == np.uint16 and out[0, 0] == 65535
    up = PillowResizeShortestEdge(scale=12, max_size=100)(
        dict(img=np.zeros((6, 10, 3), np.uint8), gt_seg_map=seg.copy(),
             seg_fields=['gt_seg_map']))['gt_seg_map']
    np.testing.assert_array_equal(up, seg[np.ix_(np.arange(12) // 2, np.arange(20) // 2)])


def test_bad_arguments():
    with pytest.raises(ValueError, match='interpolation'):
        PillowResizeShortestEdge(scale=384, max_size=1333, interpolation='area')
    with pytest.raises(ValueError, match='positive'):
        PillowResizeShortestEdge(scale=0, max_size=1333)


def test_reference_train_pipeline_pads_a_thin_crop_as_the_reference():
    """configs/_base_/datasets/coco_stuff171.py on a 100x1000 image: the long side caps the
    resize at 133x1333, the crop is 133x384, padded to 384x384 with 128 / ignore (255)."""
    import os.path as osp
    from mmengine.config import Config
    from mmengine.dataset import Compose
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    cfg = Config.fromfile(osp.join(root, 'configs', '_base_', 'datasets', 'coco_stuff171.py'))
    steps = cfg.train_pipeline
    assert [t['type'] for t in steps[2:-1]] == [
        'PillowResizeShortestEdge', 'RandomCrop', 'PhotoMetricDistortion', 'RandomFlip', 'Pad']
    pipeline = Compose(steps[2:-1])
    out = pipeline(dict(img=np.full((100, 1000, 3), 60, np.uint8),
                        gt_seg_map=np.ones((100, 1000), np.uint8), seg_fields=['gt_seg_map'],
                        img_shape=(100, 1000), ori_shape=(100, 1000)))
    assert out['img'].shape == (384, 384, 3) and out['gt_seg_map'].shape == (384, 384)
    assert (out['img'][133:] == 128).all() and (out['gt_seg_map'][133:] == 255).all()
    assert (out['gt_seg_map'][:133] == 1).all()
