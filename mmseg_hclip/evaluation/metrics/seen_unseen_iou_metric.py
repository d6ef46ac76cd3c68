from typing import Dict, Optional, Sequence

import numpy as np
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS


@METRICS.register_module()
class SeenUnseenIoUMetric(IoUMetric):
    """mmseg's :class:`IoUMetric` plus mIoU over seen and unseen class subsets.

    Open-vocabulary evaluation asks separately how well a model segments the
    classes it was trained on (seen) and classes it only meets by name at test
    time (unseen). This metric reports everything IoUMetric reports, plus
    ``mIoU_seen``, ``mIoU_unseen`` and their harmonic mean ``hIoU``.

    Args:
        seen_classes (Sequence[str]): Names of the seen classes; every name must
            be in the dataset's ``classes``.
        unseen_classes (Sequence[str], optional): Names of the unseen classes.
            Defaults to every dataset class that is not seen.
        **kwargs: Passed to :class:`IoUMetric` (``ignore_index``, ...).
    """

    def __init__(self, seen_classes: Sequence[str],
                 unseen_classes: Optional[Sequence[str]] = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if not seen_classes:
            raise ValueError('seen_classes is empty; list the class names seen in training')
        self.seen_classes = list(seen_classes)
        self.unseen_classes = None if unseen_classes is None else list(unseen_classes)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        metrics = super().compute_metrics(list(results))
        if self.format_only:
            return metrics
        classes = list(self.dataset_meta['classes'])
        unseen = self.unseen_classes
        if unseen is None:
            unseen = [c for c in classes if c not in self.seen_classes]
        missing = [c for c in self.seen_classes + unseen if c not in classes]
        if missing:
            raise ValueError(f'SeenUnseenIoUMetric: {missing} are not classes of the dataset '
                             f'({classes}); fix seen_classes/unseen_classes in the config')
        area = [sum(parts) for parts in zip(*results)]
        intersect, union = (a.double().cpu().numpy() for a in area[:2])
        with np.errstate(invalid='ignore', divide='ignore'):
            iou = intersect / union

        def mean_iou(names):
            vals = iou[[classes.index(c) for c in names]]
            return float(np.round(np.nanmean(vals) * 100, 2)) if np.isfinite(vals).any() \
                else float('nan')

        seen, unseen_miou = mean_iou(self.seen_classes), mean_iou(unseen)
        metrics['mIoU_seen'] = seen
        metrics['mIoU_unseen'] = unseen_miou
        metrics['hIoU'] = float(np.round(2 * seen * unseen_miou / (seen + unseen_miou), 2)) \
            if seen + unseen_miou > 0 else 0.0
        return metrics
