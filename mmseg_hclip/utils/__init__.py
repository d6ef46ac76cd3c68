from .cfg_options import check_cfg_options
from .checkpoint import (UnsafeCheckpointError, load_checkpoint_safely,
                         register_safe_checkpoint_globals, safe_checkpoint_globals)
from .runtime import setup_runtime

__all__ = [
    'check_cfg_options', 'UnsafeCheckpointError', 'load_checkpoint_safely',
    'register_safe_checkpoint_globals', 'safe_checkpoint_globals', 'setup_runtime'
]
