"""VocabularyHook: the model's classes follow the dataset of the running loop."""
from types import SimpleNamespace

import pytest

import mmseg_hclip  # noqa: F401  (registers the modules)
from mmseg.registry import HOOKS
from mmseg_hclip.engine.hooks import VocabularyHook


class RecordingModel:

    def __init__(self):
        self.calls = []

    def set_vocabulary(self, names):
        self.calls.append(tuple(names))


def loader(classes):
    meta = dict(classes=classes) if classes is not None else dict()
    return SimpleNamespace(dataset=SimpleNamespace(metainfo=meta))


def make_runner(model, train=('sky', 'road'), val=('cat', 'dog', 'tree'), test=('a', )):
    return SimpleNamespace(model=model, train_dataloader=loader(train),
                           val_dataloader=loader(val), test_dataloader=loader(test))


def test_train_val_test_switching():
    model = RecordingModel()
    runner = make_runner(model)
    hook = HOOKS.build(dict(type='VocabularyHook'))
    assert isinstance(hook, VocabularyHook)
    hook.before_train(runner)
    hook.before_val(runner)
    hook.after_val(runner)
    hook.before_test(runner)
    assert model.calls == [('sky', 'road'), ('cat', 'dog', 'tree'), ('sky', 'road'), ('a', )]


def test_val_outside_training_does_not_restore():
    model = RecordingModel()
    hook = VocabularyHook()
    runner = make_runner(model)
    hook.before_val(runner)
    hook.after_val(runner)
    assert model.calls == [('cat', 'dog', 'tree')]


def test_switches_can_be_turned_off():
    model = RecordingModel()
    hook = VocabularyHook(val=False)
    runner = make_runner(model)
    hook.before_train(runner)
    hook.before_val(runner)
    hook.after_val(runner)
    assert model.calls == [('sky', 'road')]


def test_dataset_without_classes_is_a_clear_error():
    hook = VocabularyHook()
    with pytest.raises(ValueError, match=r"no metainfo\['classes'\]"):
        hook.before_test(make_runner(RecordingModel(), test=None))


def test_model_without_set_vocabulary_is_a_clear_error():
    with pytest.raises(TypeError, match='set_vocabulary'):
        VocabularyHook().before_train(make_runner(object()))
