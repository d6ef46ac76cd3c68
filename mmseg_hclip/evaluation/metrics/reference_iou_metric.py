"""IoU metric whose mIoU averages over the classes present in the ground truth."""
from collections import OrderedDict
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
from mmengine.logging import MMLogger, print_log
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS

__all__ = ['ReferenceIoUMetric']


@METRICS.register_module()
class ReferenceIoUMetric(IoUMetric):
    """MMSeg's ``IoUMetric`` reporting the mIoU of the reference evaluation.

    The published H-CLIP (and CAT-Seg) numbers come from detectron2's
    ``SemSegEvaluator``, which accumulates intersection and union over the
    whole evaluated set and averages the per-class IoU over the classes that
    have ground-truth pixels in that set. MMSeg's ``IoUMetric`` averages over
    every class whose union is non-zero, i.e. also over classes that are only
    *predicted*: each of those counts as IoU 0. On benchmarks with many
    classes absent from the validation ground truth (A-847, PC-459) MMSeg's
    mIoU is therefore lower than the reference's for the same predictions.

    This metric computes the same per-image areas as ``IoUMetric`` (so every
    other number - ``aAcc``, ``mAcc``, ``mDice`` ..., the per-class table -
    is MMSeg's) and reports:

    - ``mIoU``: the reference mean, over classes with ground truth;
    - ``mIoU_mmseg``: MMSeg's mean (classes with ground truth or prediction).

    ``mAcc`` needs no such change: a class without ground truth has no
    accuracy in either codebase. ``nan_to_num`` affects ``mIoU_mmseg`` only.
    The per-class table shows MMSeg's per-class IoU (0 for a predicted class
    without ground truth); the log lists the classes left out of ``mIoU``.

    Args:
        **kwargs: :class:`mmseg.evaluation.IoUMetric` arguments
            (``ignore_index``, ``iou_metrics``, ``output_dir`` ...).
    """

    @staticmethod
    def gt_class_mean_iou(intersect: torch.Tensor, union: torch.Tensor,
                          label: torch.Tensor) -> Tuple[float, np.ndarray, np.ndarray]:
        """Mean IoU over the classes that have ground truth.

        Args:
            intersect (Tensor): [K] summed intersection areas.
            union (Tensor): [K] summed union areas.
            label (Tensor): [K] summed ground-truth areas.

        Returns:
            tuple: the mean IoU in percent rounded to 2 decimals (NaN when no
            class has ground truth), the boolean mask [K] of averaged classes,
            and the mask [K] of classes predicted but absent from the ground
            truth (left out here, IoU 0 in MMSeg's mean).
        """
        intersect, union, label = (torch.as_tensor(a).double().cpu().numpy()
                                   for a in (intersect, union, label))
        valid = (label > 0) & (union > 0)
        excluded = (label == 0) & (union > 0)
        if not valid.any():
            return float('nan'), valid, excluded
        mean = float((intersect[valid] / union[valid]).mean())
        return float(np.round(mean * 100, 2)), valid, excluded

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """MMSeg's metrics with ``mIoU`` replaced by the reference mean.

        Args:
            results (list): Per-image ``(intersect, union, pred_area,
                label_area)`` tuples from :meth:`process`.

        Returns:
            dict: ``aAcc``, ``mIoU`` (reference), ``mIoU_mmseg`` and the other
            requested means.
        """
        metrics = super().compute_metrics(results)
        if self.format_only or 'mIoU' not in metrics:
            return metrics
        intersect, union, _, label = (sum(parts) for parts in zip(*results))
        miou, valid, excluded = self.gt_class_mean_iou(intersect, union, label)
        out = OrderedDict()
        for key, value in metrics.items():
            if key == 'mIoU':
                out['mIoU'] = miou
                out['mIoU_mmseg'] = value
            else:
                out[key] = value
        names = list(self.dataset_meta['classes']) if self.dataset_meta else []
        logger: MMLogger = MMLogger.get_current_instance()
        message = (f'mIoU averages the {int(valid.sum())} classes with ground truth '
                   f'(detectron2 SemSegEvaluator); mIoU_mmseg also averages the '
                   f'{int(excluded.sum())} classes predicted but absent from the ground truth '
                   '(IoU 0).')
        if excluded.any() and len(names) == len(excluded):
            left_out = _shorten([names[i] for i in np.flatnonzero(excluded)])
            message += f' Left out of mIoU: {left_out}'
        print_log(message, logger=logger)
        return out


def _shorten(items: Sequence[str], limit: int = 20) -> str:
    shown = ', '.join(items[:limit])
    return shown + (f' ... ({len(items) - limit} more)' if len(items) > limit else '')
