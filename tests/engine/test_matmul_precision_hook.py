"""Float32MatmulPrecisionHook sets torch's float32 matmul precision for a run and restores it."""
import pytest
import torch
from mmseg.registry import HOOKS

import mmseg_hclip  # noqa: F401  (registers the hook)


def test_sets_and_restores_precision():
    before = torch.get_float32_matmul_precision()
    hook = HOOKS.build(dict(type='Float32MatmulPrecisionHook', precision='high'))
    hook.before_run(runner=None)
    try:
        assert torch.get_float32_matmul_precision() == 'high'
    finally:
        hook.after_run(runner=None)
    assert torch.get_float32_matmul_precision() == before


def test_bad_precision_is_a_clear_error():
    with pytest.raises(ValueError, match="precision='tf32'.*'high'"):
        HOOKS.build(dict(type='Float32MatmulPrecisionHook', precision='tf32'))
