import os.path as osp
from typing import Sequence

import numpy as np
from mmseg.registry import METRICS
from PIL import Image

from .reference_iou_metric import ReferenceIoUMetric


@METRICS.register_module()
class IoUMetric16(ReferenceIoUMetric):
    """:class:`ReferenceIoUMetric` whose saved predictions hold any class id.

    With ``output_dir`` set (``tools/test.py --out DIR``), mmseg's metric writes
    predictions as uint8 PNGs, which silently wraps class ids above 255 (A-847,
    PC-459). This subclass scores exactly as ReferenceIoUMetric (``mIoU`` over the
    classes with ground truth, MMSeg's mean as ``mIoU_mmseg``) and writes uint8 PNGs
    for up to 256 classes and 16-bit PNGs beyond.
    """

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        output_dir, self.output_dir = self.output_dir, None
        try:
            super().process(data_batch, data_samples)
        finally:
            self.output_dir = output_dir
        if output_dir is None:
            return
        dtype = np.uint8 if len(self.dataset_meta['classes']) <= 256 else np.uint16
        for data_sample in data_samples:
            mask = data_sample['pred_sem_seg']['data'].squeeze().cpu().numpy()
            if data_sample.get('reduce_zero_label', False):
                mask = mask + 1
            name = osp.splitext(osp.basename(data_sample['img_path']))[0]
            Image.fromarray(mask.astype(dtype)).save(
                osp.abspath(osp.join(output_dir, f'{name}.png')))
