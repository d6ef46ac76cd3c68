"""SeenUnseenIoUMetric against a hand computation."""
import numpy as np
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from mmseg_hclip.evaluation import SeenUnseenIoUMetric


def _sample(pred, gt):
    s = SegDataSample()
    s.pred_sem_seg = PixelData(data=torch.tensor(pred)[None])
    s.gt_sem_seg = PixelData(data=torch.tensor(gt)[None])
    return s.to_dict()


def test_seen_unseen_miou_by_hand():
    classes = ('bg', 'a', 'b', 'c')
    gt = np.array([[0, 0, 1, 1], [2, 2, 3, 3]])
    pred = np.array([[0, 1, 1, 1], [2, 3, 3, 3]])
    metric = SeenUnseenIoUMetric(seen_classes=['bg', 'a'], unseen_classes=['b', 'c'])
    metric.dataset_meta = dict(classes=classes)
    metric.process({}, [_sample(pred, gt)])
    out = metric.compute_metrics(metric.results)
    # IoU per class: bg 1/2, a 2/3, b 1/2, c 2/3
    iou = np.array([1 / 2, 2 / 3, 1 / 2, 2 / 3])
    assert out['mIoU_seen'] == pytest.approx(round(iou[:2].mean() * 100, 2))
    assert out['mIoU_unseen'] == pytest.approx(round(iou[2:].mean() * 100, 2))
    s, u = out['mIoU_seen'], out['mIoU_unseen']
    assert out['hIoU'] == pytest.approx(round(2 * s * u / (s + u), 2))
    assert out['mIoU'] == pytest.approx(round(iou.mean() * 100, 2))


def test_unknown_class_name_is_an_error():
    metric = SeenUnseenIoUMetric(seen_classes=['bg', 'zebra'])
    metric.dataset_meta = dict(classes=('bg', 'a'))
    metric.process({}, [_sample(np.zeros((2, 2), int), np.zeros((2, 2), int))])
    with pytest.raises(ValueError, match='zebra'):
        metric.compute_metrics(metric.results)


def test_empty_seen_list():
    with pytest.raises(ValueError, match='seen_classes is empty'):
        SeenUnseenIoUMetric(seen_classes=[])
