"""The embedded default: a synthetic open-vocabulary shapes dataset for the quickstart."""
from .shapes import (EVAL_CLASSES, SEEN_CLASSES, TRAIN_CLASSES, UNSEEN_CLASSES,
                     generate_shapes_dataset)
from .shapes_dataset import ShapesDataset

__all__ = ['EVAL_CLASSES', 'SEEN_CLASSES', 'TRAIN_CLASSES', 'UNSEEN_CLASSES',
           'generate_shapes_dataset', 'ShapesDataset']
