"""Web demo of H-CLIP open-vocabulary segmentation (Gradio page + its framework-free logic).

``core`` needs only the mmseg_hclip stack; ``ui`` imports Gradio when a page is built.
"""
from .core import (DEFAULT_MAX_PIXELS, MODES, PRESETS, Segmentation, Segmenter,
                   format_vocabulary, parse_vocabulary_box, preset_vocabulary, read_image,
                   score_map_image)

__all__ = [
    'DEFAULT_MAX_PIXELS', 'MODES', 'PRESETS', 'Segmentation', 'Segmenter', 'format_vocabulary',
    'parse_vocabulary_box', 'preset_vocabulary', 'read_image', 'score_map_image'
]
