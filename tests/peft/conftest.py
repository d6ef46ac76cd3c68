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



@pytest.fixture(autouse=True)
def _skip_slow_unless_selected(request):
    """Real-size tests (``@pytest.mark.slow``) run only when asked for with ``-m slow``."""
    if request.node.get_closest_marker('slow') and 'slow' not in request.config.getoption(
            'markexpr', ''):
        pytest.skip('real-size test: run with `pytest -m slow`')
