"""IoU with background proxies collapsed into one background class (PAS-20b)."""
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np
from PIL import Image

from mmseg.registry import METRICS

from .reference_iou_metric import ReferenceIoUMetric


@METRICS.register_module()
class BackgroundMappedIoUMetric(ReferenceIoUMetric):
    """:class:`ReferenceIoUMetric` after mapping every predicted index >=
    ``background_index`` to ``background_index``.

    PAS-20b queries the model with 59 names (20 VOC classes, then 39 PASCAL
    Context classes standing for background); a prediction of any proxy counts
    as background. Scoring then covers ``background_index + 1`` classes
    (20 VOC classes + background = 21): per-class IoU, mIoU (over the classes
    with ground truth, as the reference's VOC-b evaluator; MMSeg's mean as
    ``mIoU_mmseg``), aAcc etc. exactly as ``ReferenceIoUMetric`` computes
    them, with the class table naming the last class ``background_name``.

    Args:
        background_index (int, optional): First proxy index and the label of
            background in the ground truth. None reads
            ``dataset_meta['background_index']`` (``PascalVOC20bDataset``
            sets 20). Defaults to None.
        background_name (str, optional): Name of the background class in the
            results table. None reads ``dataset_meta['background_name']``,
            else ``'background'``. Defaults to None.
        ignore_index (int): Ground-truth value excluded from scoring.
            Defaults to 255.
        **kwargs: Other ``IoUMetric`` arguments (``iou_metrics``, ``prefix`` ...).
    """

    def __init__(self,
                 background_index: Optional[int] = None,
                 background_name: Optional[str] = None,
                 ignore_index: int = 255,
                 **kwargs) -> None:
        super().__init__(ignore_index=ignore_index, **kwargs)
        self._background_index = background_index
        self._background_name = background_name

    @property
    def background_index(self) -> int:
        """The index that all proxy predictions collapse to."""
        index = self._background_index
        if index is None and self.dataset_meta is not None:
            index = self.dataset_meta.get('background_index')
        if index is None:
            raise ValueError(
                'BackgroundMappedIoUMetric needs background_index: set it in the '
                'evaluator config (background_index=20 for PAS-20b) or use a dataset '
                "whose METAINFO has 'background_index' (PascalVOC20bDataset)")
        return int(index)

    def scored_class_names(self) -> List[str]:
        """The ``background_index + 1`` names of the scored classes."""
        name = self._background_name
        if name is None and self.dataset_meta is not None:
            name = self.dataset_meta.get('background_name')
        classes = list(self.dataset_meta['classes'])[:self.background_index]
        return classes + [name or 'background']

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Collapse proxy predictions, then accumulate areas over 21 classes.

        Args:
            data_batch (dict): Unused.
            data_samples (Sequence[dict]): Model outputs with ``pred_sem_seg``
                (1, H, W) and ``gt_sem_seg`` (1, H, W). With ``output_dir`` set,
                the collapsed prediction is saved as ``<image name>.png``.
        """
        background = self.background_index
        num_classes = background + 1
        for data_sample in data_samples:
            pred_label = data_sample['pred_sem_seg']['data'].squeeze()
            pred_label = pred_label.clamp(max=background)
            if not self.format_only:
                label = data_sample['gt_sem_seg']['data'].squeeze().to(pred_label)
                self.results.append(
                    self.intersect_and_union(pred_label, label, num_classes,
                                             self.ignore_index))
            if self.output_dir is not None:
                basename = osp.splitext(osp.basename(data_sample['img_path']))[0]
                Image.fromarray(pred_label.cpu().numpy().astype(np.uint8)).save(
                    osp.abspath(osp.join(self.output_dir, f'{basename}.png')))

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """``ReferenceIoUMetric.compute_metrics`` with the 21 scored class names."""
        full_meta = self.dataset_meta
        self.dataset_meta = dict(full_meta, classes=tuple(self.scored_class_names()))
        try:
            return super().compute_metrics(results)
        finally:
            self.dataset_meta = full_meta
