from .background_iou_metric import BackgroundMappedIoUMetric

__all__ = ['BackgroundMappedIoUMetric']
