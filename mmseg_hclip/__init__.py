"""mmseg_hclip: H-CLIP for MMSegmentation.

Importing the package registers every model, dataset, transform, metric and
hook into MMSegmentation's registries, so configs only need::

    custom_imports = dict(imports=['mmseg_hclip'], allow_failed_imports=False)

The method itself (``mmseg_hclip.peft``) is plain PyTorch and imports no mm*
package; it can be used alone.
"""
from .version import __version__

from . import peft  # noqa: F401,E402  (pure torch, always importable)
from . import apis, datasets, engine, evaluation, models, quickstart, utils  # noqa: F401,E402
from .utils import register_safe_checkpoint_globals  # noqa: E402

register_safe_checkpoint_globals()

__all__ = ['__version__']
