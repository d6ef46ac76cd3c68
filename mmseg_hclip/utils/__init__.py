from .cfg_options import check_cfg_options
from .checkpoint import (CheckpointFormatError, UnsafeCheckpointError, checkpoint_format,
                         load_checkpoint_safely, read_clip_state_dict,
                         register_safe_checkpoint_globals, safe_checkpoint_globals)
from .runtime import setup_runtime

__all__ = [
    'check_cfg_options', 'CheckpointFormatError', 'UnsafeCheckpointError', 'checkpoint_format',
    'load_checkpoint_safely', 'read_clip_state_dict',
    'register_safe_checkpoint_globals', 'safe_checkpoint_globals', 'setup_runtime'
]
