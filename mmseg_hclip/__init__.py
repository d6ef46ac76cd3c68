"""mmseg_hclip: H-CLIP for MMSegmentation.

Importing the package registers every model, dataset, transform, metric and
hook into MMSegmentation's registries, so configs only need::

    custom_imports = dict(imports=['mmseg_hclip'], allow_failed_imports=False)

The method itself (``mmseg_hclip.peft``) is plain PyTorch and imports no mm*
package; it can be used alone, also where the MMSeg stack is not installed
(then only ``mmseg_hclip.peft`` is available and a warning says so).
"""
import warnings

from .version import __version__

from . import peft  # noqa: F401,E402  (pure torch, always importable)

try:
    import mmseg  # noqa: F401
except ModuleNotFoundError as err:  # only a missing stack; a broken one still raises
    if err.name not in ('mmseg', 'mmengine', 'mmcv'):
        raise
    warnings.warn(f'{err.name} is not installed: only mmseg_hclip.peft is available '
                  '(run `bash tools/install.sh` for the MMSegmentation extension)')
else:
    from . import apis, datasets, engine, evaluation, models, quickstart, utils  # noqa: F401
    from .engine.checkpoint_io import register_atomic_local_backend
    from .utils import register_safe_checkpoint_globals

    register_safe_checkpoint_globals()
    register_atomic_local_backend()  # checkpoints are written atomically (temp file + rename)

__all__ = ['__version__']
