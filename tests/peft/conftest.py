import copy

import pytest
from mmseg_hclip.peft.testing import random_inputs, tiny_clip


@pytest.fixture(scope='module')
def base_clip():
    """A tiny ViT CLIP (image: 2 x 128 wide, text: 2 x 64 wide); do not modify in place."""
    return tiny_clip()


@pytest.fixture
def clip(base_clip):
    """A fresh copy of the tiny CLIP for tests that modify it."""
    return copy.deepcopy(base_clip)


@pytest.fixture(scope='module')
def inputs(base_clip):
    return random_inputs(base_clip, batch_size=2, num_texts=3)

