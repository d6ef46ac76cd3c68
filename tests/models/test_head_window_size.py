"""decode_head.window_size must be a positive integer (issue 12, probe #5): 0 used to end in
a bare assertion inside mmpretrain's ShiftWindowMSA."""
import pytest

import mmseg_hclip  # noqa: F401
from mmseg.registry import MODELS


@pytest.mark.parametrize('window', [0, -3, 2.5])
def test_bad_window_size_is_named(window):
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    cfg = dict(type='HCLIPCostAggHead', in_channels=32, guidance_channels=64,
               feature_size=(6, 6), channels=32, num_layers=1, num_heads=2,
               window_size=window, appearance_guidance_channels=16, text_guidance_channels=16,
               decoder_channels=(16, 8), decoder_guidance_channels=(16, 8),
               decoder_guidance_proj_channels=(8, 4), pad_len=16)
    with pytest.raises(ValueError, match=rf'decode_head.window_size={window} must be a '
                                         r'positive integer .*12 in the reference'):
        MODELS.build(cfg)
