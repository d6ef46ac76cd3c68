# Copyright (c) mmseg_hclip contributors. Licensed under the Apache License 2.0.
"""Keeps an open-vocabulary segmentor's classes in step with the running dataloader."""
from typing import Optional, Sequence

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS

__all__ = ['VocabularyHook']


def _classes_of(dataloader, which: str) -> Sequence[str]:
    dataset = getattr(dataloader, 'dataset', None)
    meta = getattr(dataset, 'metainfo', None)
    classes = meta.get('classes') if meta is not None else None
    if not classes:
        raise ValueError(
            f"VocabularyHook: the {which} dataset ({type(dataset).__name__}) has no "
            "metainfo['classes']; give the dataset a METAINFO / metainfo=dict(classes=...), "
            'or set the vocabulary explicitly with model.class_names.')
    return tuple(classes)


@HOOKS.register_module()
class VocabularyHook(Hook):
    """Set the model's vocabulary from the dataset of the running loop.

    Before training: the train dataset's ``metainfo['classes']``; before each
    validation: the val dataset's classes (and back to the train classes
    after it); before testing: the test dataset's classes. The model (or the
    module inside a DDP/FSDP wrapper) must have ``set_vocabulary(names)``
    (see :class:`HCLIPSegmentor`).

    Args:
        train (bool): Follow the train dataset. Defaults to True.
        val (bool): Follow the val dataset. Defaults to True.
        test (bool): Follow the test dataset. Defaults to True.
    """

    priority = 'ABOVE_NORMAL'

    def __init__(self, train: bool = True, val: bool = True, test: bool = True):
        self.train, self.val, self.test = train, val, test
        self._train_classes: Optional[Sequence[str]] = None

    @staticmethod
    def _set(runner, classes: Sequence[str], which: str) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'set_vocabulary'):
            raise TypeError(f'VocabularyHook: {type(model).__name__} has no set_vocabulary(); '
                            'the hook is meant for HCLIPSegmentor.')
        model.set_vocabulary(classes)
        print_log(f'VocabularyHook: {which} vocabulary of {len(classes)} classes.',
                  logger='current')

    def before_train(self, runner) -> None:
        if self.train:
            self._train_classes = _classes_of(runner.train_dataloader, 'train')
            self._set(runner, self._train_classes, 'train')

    def before_val(self, runner) -> None:
        if self.val:
            self._set(runner, _classes_of(runner.val_dataloader, 'val'), 'val')

    def after_val(self, runner) -> None:
        if self.val and self._train_classes is not None:
            self._set(runner, self._train_classes, 'train')

    def before_test(self, runner) -> None:
        if self.test:
            self._set(runner, _classes_of(runner.test_dataloader, 'test'), 'test')
