"""IoUMetric16 scores like ReferenceIoUMetric and saves class ids above 255 intact."""
import numpy as np
import torch
from mmengine.structures import PixelData
from mmseg.evaluation import IoUMetric
from mmseg.structures import SegDataSample
from PIL import Image

from mmseg_hclip.evaluation import IoUMetric16, ReferenceIoUMetric


def _sample(pred, gt, name):
    s = SegDataSample()
    s.pred_sem_seg = PixelData(data=torch.tensor(pred)[None])
    s.gt_sem_seg = PixelData(data=torch.tensor(gt)[None])
    s.set_metainfo(dict(img_path=f'/data/{name}.jpg'))
    return s.to_dict()


def test_same_scores_and_16bit_predictions(tmp_path):
    classes = tuple(f'c{i}' for i in range(847))
    gt = np.array([[0, 255, 300], [846, 65535, 5]])
    pred = np.array([[0, 255, 301], [846, 846, 5]])
    metrics = {}
    for cls, out in ((IoUMetric, tmp_path / 'a'), (IoUMetric16, tmp_path / 'b'),
                     (ReferenceIoUMetric, tmp_path / 'c')):
        m = cls(ignore_index=65535, output_dir=str(out))
        m.dataset_meta = dict(classes=classes)
        m.process({}, [_sample(pred, gt, 'img1')])
        metrics[cls.__name__] = m.compute_metrics(m.results)
    assert metrics['ReferenceIoUMetric'] == metrics['IoUMetric16']
    assert metrics['IoUMetric16']['mIoU_mmseg'] == metrics['IoUMetric']['mIoU']
    saved = np.array(Image.open(tmp_path / 'b' / 'img1.png'))
    np.testing.assert_array_equal(saved, pred)  # 301 and 846 survive
    wrapped = np.array(Image.open(tmp_path / 'a' / 'img1.png'))
    assert (wrapped != pred).any()  # mmseg's uint8 output wraps them


def test_small_vocabularies_stay_uint8(tmp_path):
    m = IoUMetric16(output_dir=str(tmp_path))
    m.dataset_meta = dict(classes=('a', 'b', 'c'))
    m.process({}, [_sample(np.array([[0, 2], [1, 1]]), np.array([[0, 1], [1, 1]]), 'x')])
    img = Image.open(tmp_path / 'x.png')
    assert img.mode == 'L' and np.array(img).tolist() == [[0, 2], [1, 1]]
