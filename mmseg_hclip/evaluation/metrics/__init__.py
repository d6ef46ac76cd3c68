from .background_iou_metric import BackgroundMappedIoUMetric
from .seen_unseen_iou_metric import SeenUnseenIoUMetric

__all__ = ['BackgroundMappedIoUMetric', 'SeenUnseenIoUMetric']
