from .check_labels import CheckSegLabels, check_label_map
from .loading import LoadAnnotations16, as_label_array
from .pillow_resize_shortest_edge import PillowResizeShortestEdge

__all__ = ['LoadAnnotations16', 'as_label_array', 'CheckSegLabels', 'check_label_map',
           'PillowResizeShortestEdge']
