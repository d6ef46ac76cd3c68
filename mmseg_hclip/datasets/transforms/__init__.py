from .loading import LoadAnnotations16, as_label_array

__all__ = ['LoadAnnotations16', 'as_label_array']
