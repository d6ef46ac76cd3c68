from .loading import LoadAnnotations16, as_label_array
from .pillow_resize_shortest_edge import PillowResizeShortestEdge

__all__ = ['LoadAnnotations16', 'as_label_array', 'PillowResizeShortestEdge']
