"""The embedded default: a synthetic open-vocabulary shapes dataset for the quickstart, and
the captioned scenes + tiny CLIP pretraining that give its CLIP a vocabulary.

``shapes``, ``captions`` and ``tiny_clip`` need no mm* package; ``ShapesDataset`` (MMSeg)
is exported when MMSegmentation is installed.
"""
from .shapes import (EVAL_CLASSES, SEEN_CLASSES, TRAIN_CLASSES, UNSEEN_CLASSES,
                     generate_shapes_dataset)

__all__ = ['EVAL_CLASSES', 'SEEN_CLASSES', 'TRAIN_CLASSES', 'UNSEEN_CLASSES',
           'generate_shapes_dataset']

try:
    import mmseg  # noqa: F401
except ModuleNotFoundError as err:  # only a missing stack; a broken one still raises
    if err.name not in ('mmseg', 'mmengine', 'mmcv'):
        raise
else:
    from .shapes_dataset import ShapesDataset  # noqa: F401
    __all__.append('ShapesDataset')
