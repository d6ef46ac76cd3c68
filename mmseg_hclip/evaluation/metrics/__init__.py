from .background_iou_metric import BackgroundMappedIoUMetric
from .iou_metric16 import IoUMetric16
from .reference_iou_metric import ReferenceIoUMetric
from .seen_unseen_iou_metric import SeenUnseenIoUMetric

__all__ = [
    'BackgroundMappedIoUMetric', 'IoUMetric16', 'ReferenceIoUMetric', 'SeenUnseenIoUMetric'
]
