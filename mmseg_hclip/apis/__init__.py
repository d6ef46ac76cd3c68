"""High-level APIs: build a model from config + checkpoint, segment with any vocabulary,
merge the adapter into the CLIP weights."""
from .inference import (MERGED_META_KEY, CheckpointMismatchError, check_state_dict,
                        draw_legend, generate_palette, inference_model, init_model,
                        is_merged_checkpoint, load_image, parse_vocabulary, read_checkpoint,
                        resolve_device, show_result)
from .merge import merge_checkpoint, open_clip_model_config, open_clip_paths

__all__ = [
    'MERGED_META_KEY', 'CheckpointMismatchError', 'check_state_dict', 'draw_legend',
    'generate_palette', 'inference_model', 'init_model', 'is_merged_checkpoint', 'load_image',
    'parse_vocabulary', 'read_checkpoint', 'resolve_device', 'show_result', 'merge_checkpoint',
    'open_clip_model_config', 'open_clip_paths'
]
