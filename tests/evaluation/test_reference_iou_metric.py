"""ReferenceIoUMetric: mIoU averaged over the classes with ground truth (detectron2's
SemSegEvaluator), MMSeg's mean beside it as mIoU_mmseg; the same for the 16-bit and the
PAS-20b metrics that subclass it."""
import numpy as np
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS
from mmseg.structures import SegDataSample

from mmseg_hclip.evaluation import BackgroundMappedIoUMetric, IoUMetric16, ReferenceIoUMetric


def _sample(pred, gt, name='img'):
    s = SegDataSample()
    s.pred_sem_seg = PixelData(data=torch.as_tensor(np.asarray(pred))[None])
    s.gt_sem_seg = PixelData(data=torch.as_tensor(np.asarray(gt))[None])
    s.set_metainfo(dict(img_path=f'/data/{name}.jpg'))
    return s.to_dict()


def _score(metric, classes, pairs):
    metric.dataset_meta = dict(classes=tuple(classes))
    for i, (pred, gt) in enumerate(pairs):
        metric.process({}, [_sample(pred, gt, f'img{i}')])
    return metric.compute_metrics(metric.results)


# Five classes a..e; 255 = ignore. Class c is predicted (twice on labelled pixels, twice on
# ignored ones) but never in the ground truth; class e occurs nowhere.
PAIRS = [
    (np.array([[0, 2, 1, 2], [0, 1, 2, 1]]),    # prediction
     np.array([[0, 0, 1, 255], [0, 1, 1, 1]])),  # ground truth
    (np.array([[3, 0], [0, 2]]),
     np.array([[3, 3], [0, 255]])),
]
# By hand, over the 10 labelled pixels:
#   a: gt 4, pred 4, intersection 3 -> union 5, IoU 3/5
#   b: gt 4, pred 3, intersection 3 -> union 4, IoU 3/4
#   c: gt 0, pred 2                 -> union 2, IoU 0 (MMSeg) / not averaged (reference)
#   d: gt 2, pred 1, intersection 1 -> union 2, IoU 1/2
#   e: nothing                      -> NaN in both, never averaged
REFERENCE_MIOU = round((3 / 5 + 3 / 4 + 1 / 2) / 3 * 100, 2)  # 61.67
MMSEG_MIOU = round((3 / 5 + 3 / 4 + 0 + 1 / 2) / 4 * 100, 2)  # 46.25


def test_predicted_class_absent_from_ground_truth_is_not_averaged():
    metrics = _score(ReferenceIoUMetric(iou_metrics=['mIoU'], ignore_index=255), 'abcde', PAIRS)
    assert metrics['mIoU'] == pytest.approx(REFERENCE_MIOU) == 61.67
    assert metrics['mIoU_mmseg'] == pytest.approx(MMSEG_MIOU) == 46.25
    # every other number is MMSeg's
    mmseg = _score(IoUMetric(iou_metrics=['mIoU'], ignore_index=255), 'abcde', PAIRS)
    assert mmseg['mIoU'] == metrics['mIoU_mmseg'] and mmseg['aAcc'] == metrics['aAcc']
    assert list(metrics) == ['aAcc', 'mIoU', 'mIoU_mmseg', 'mAcc']


def test_other_means_unchanged_and_registered():
    kwargs = dict(iou_metrics=['mIoU', 'mDice', 'mFscore'], ignore_index=255)
    ours = _score(METRICS.build(dict(type='ReferenceIoUMetric', **kwargs)), 'abcde', PAIRS)
    mmseg = _score(IoUMetric(**kwargs), 'abcde', PAIRS)
    assert {k: v for k, v in ours.items() if k not in ('mIoU', 'mIoU_mmseg')} == \
        {k: v for k, v in mmseg.items() if k != 'mIoU'}
    # mAcc: a class without ground truth has no accuracy in either codebase
    assert ours['mAcc'] == pytest.approx(round((3 / 4 + 3 / 4 + 1 / 2) / 3 * 100, 2))


def test_equals_confusion_matrix_formulation_on_random_16bit_labels():
    """detectron2's formulation: one (K+1)x(K+1) confusion matrix [pred, gt] with the ignored
    pixels in the extra column; IoU = tp / (gt + pred - tp) averaged where gt > 0."""
    k, ignore = 300, 65535
    rng = np.random.default_rng(0)
    pairs = []
    conf = np.zeros((k + 1, k + 1), dtype=np.int64)
    for _ in range(3):
        gt = rng.integers(0, 40, size=(16, 16)) * 7  # 40 of the 300 classes occur
        gt[rng.random(gt.shape) < 0.1] = ignore
        pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, k, size=gt.shape))
        pred[pred == ignore] = 0
        pairs.append((pred, gt))
        g = np.where(gt == ignore, k, gt)
        conf += np.bincount((k + 1) * pred.ravel() + g.ravel(),
                            minlength=(k + 1)**2).reshape(k + 1, k + 1)
    tp = np.diag(conf)[:k].astype(float)
    pos_gt = conf[:k, :k].sum(axis=0).astype(float)
    pos_pred = conf[:k, :k].sum(axis=1).astype(float)
    valid = pos_gt > 0
    expected = 100 * np.mean(tp[valid] / (pos_gt + pos_pred - tp)[valid])
    classes = [f'c{i}' for i in range(k)]
    metrics = _score(IoUMetric16(iou_metrics=['mIoU'], ignore_index=ignore), classes, pairs)
    assert metrics['mIoU'] == pytest.approx(round(expected, 2))
    assert metrics['mIoU_mmseg'] < metrics['mIoU'] - 1  # many classes predicted, not in gt


def test_background_metric_maps_proxies_then_averages_gt_classes():
    # 3 "VOC" classes (0-2), background index 3, proxies 4-5 count as background.
    pred = np.array([[0, 4, 5, 2], [1, 1, 3, 2]])
    gt = np.array([[0, 3, 3, 3], [1, 1, 3, 0]])
    # after mapping: pred [[0,3,3,2],[1,1,3,2]]
    #   0: gt 2, pred 1, tp 1 -> 1/2;  1: gt 2, pred 2, tp 2 -> 1;  2: gt 0, pred 2 -> left out
    #   background: gt 4, pred 3, tp 3 -> 3/4
    m = BackgroundMappedIoUMetric(background_index=3, iou_metrics=['mIoU'])
    metrics = _score(m, ['v0', 'v1', 'v2', 'p0', 'p1', 'p2'], [(pred, gt)])
    assert metrics['mIoU'] == pytest.approx(round((1 / 2 + 1 + 3 / 4) / 3 * 100, 2))
    assert metrics['mIoU_mmseg'] == pytest.approx(round((1 / 2 + 1 + 0 + 3 / 4) / 4 * 100, 2))


def test_no_ground_truth_at_all_is_nan_not_an_error():
    metrics = _score(ReferenceIoUMetric(ignore_index=255), 'ab',
                     [(np.array([[0, 1]]), np.array([[255, 255]]))])
    assert np.isnan(metrics['mIoU'])


def test_format_only_returns_nothing(tmp_path):
    m = ReferenceIoUMetric(format_only=True, output_dir=str(tmp_path))
    m.dataset_meta = dict(classes=('a', 'b'))
    m.process({}, [_sample(np.array([[0, 1]]), np.array([[0, 1]]))])
    assert m.compute_metrics(m.results) == {}
