"""BackgroundMappedIoUMetric (PAS-20b) against a hand computation."""
import numpy as np
import pytest
import torch

import mmseg_hclip  # noqa: F401
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS

from mmseg_hclip.datasets import load_classnames
from mmseg_hclip.evaluation import BackgroundMappedIoUMetric

GT = torch.tensor([[0, 0, 1, 20],
                   [20, 20, 255, 1]])
PRED = torch.tensor([[0, 1, 1, 25],
                     [58, 0, 3, 20]])
# By hand, after collapsing 25 and 58 to 20 and dropping the gt-255 pixel,
# the (gt, pred) pairs are (0,0) (0,1) (1,1) (20,20) (20,20) (20,0) (1,20):
#   class 0:  intersection 1, pred 2, gt 2 -> union 3 -> IoU 1/3
#   class 1:  intersection 1, pred 2, gt 2 -> union 3 -> IoU 1/3
#   class 20: intersection 2, pred 3, gt 3 -> union 4 -> IoU 1/2
# other classes are absent (NaN), so mIoU = (1/3 + 1/3 + 1/2) / 3; aAcc = 4 / 7.
HAND_MIOU = (1 / 3 + 1 / 3 + 1 / 2) / 3 * 100
HAND_AACC = 4 / 7 * 100


def samples():
    return [dict(pred_sem_seg=dict(data=PRED[None]), gt_sem_seg=dict(data=GT[None]),
                 img_path='x/2007_000033.jpg')]


def meta():
    return dict(classes=load_classnames('voc20b'), background_index=20,
                background_name='background')


def test_matches_hand_computation():
    metric = BackgroundMappedIoUMetric(ignore_index=255)
    metric.dataset_meta = meta()
    metric.process({}, samples())
    intersect, union, pred_area, gt_area = (t.numpy() for t in metric.results[0])
    assert intersect.shape == (21,)
    np.testing.assert_array_equal(intersect[[0, 1, 20]], [1, 1, 2])
    np.testing.assert_array_equal(union[[0, 1, 20]], [3, 3, 4])
    np.testing.assert_array_equal(pred_area[[0, 1, 20]], [2, 2, 3])
    np.testing.assert_array_equal(gt_area[[0, 1, 20]], [2, 2, 3])
    assert union.sum() == union[[0, 1, 20]].sum()
    result = metric.compute_metrics(metric.results)
    assert result['mIoU'] == pytest.approx(round(HAND_MIOU, 2))
    assert result['aAcc'] == pytest.approx(round(HAND_AACC, 2))
    # the full 59-name vocabulary is restored after scoring
    assert len(metric.dataset_meta['classes']) == 59
    assert metric.scored_class_names()[-1] == 'background'
    assert metric.scored_class_names()[:20] == list(load_classnames('voc20'))


def test_differs_from_plain_iou():
    """Without the mapping, proxy predictions are wrong classes.

    By hand: class 0 and 1 IoU 1/3, class 20 IoU 0 (its only prediction hits a
    class-1 pixel), classes 25 and 58 IoU 0 -> mIoU = (2/3) / 5 = 13.33.
    """
    plain = IoUMetric(ignore_index=255)
    plain.dataset_meta = dict(classes=load_classnames('voc20b'))
    plain.process({}, samples())
    assert plain.compute_metrics(plain.results)['mIoU'] == pytest.approx(13.33)


def test_background_index_from_config_and_errors():
    metric = METRICS.build(dict(type='BackgroundMappedIoUMetric', background_index=20))
    metric.dataset_meta = dict(classes=load_classnames('voc20b'))  # no background_index
    metric.process({}, samples())
    assert metric.compute_metrics(metric.results)['mIoU'] == pytest.approx(round(HAND_MIOU, 2))

    missing = BackgroundMappedIoUMetric()
    missing.dataset_meta = dict(classes=load_classnames('voc20b'))
    with pytest.raises(ValueError, match='background_index'):
        missing.process({}, samples())


def test_output_dir_saves_collapsed_prediction(tmp_path):
    from PIL import Image
    metric = BackgroundMappedIoUMetric(output_dir=str(tmp_path))
    metric.dataset_meta = meta()
    metric.process({}, samples())
    saved = np.array(Image.open(tmp_path / '2007_000033.png'))
    np.testing.assert_array_equal(saved, [[0, 1, 1, 20], [20, 0, 3, 20]])
