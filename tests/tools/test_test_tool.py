"""tools/test.py builds the H-CLIP model the way the checkpoint needs it."""
import os

import torch
from mmengine.config import Config

from tests.conftest import ROOT, load_script


def _test_tool():
    return load_script('tools/test.py', 'hclip_test_tool')


def test_checkpoint_decides_pretrained_and_adapter(tmp_path):
    tool = _test_tool()
    cfg_path = os.path.join(ROOT, 'configs', '_base_', 'models', 'hclip_vitb16.py')
    plain, merged = tmp_path / 'plain.pth', tmp_path / 'merged.pth'
    torch.save({'meta': {}, 'state_dict': {'w': torch.zeros(1)}}, plain)
    torch.save({'meta': {'hclip_merged': True}, 'state_dict': {'w': torch.zeros(1)}}, merged)

    cfg = Config.fromfile(cfg_path)
    assert cfg.model.backbone.pretrained == 'openai'
    tool.adapt_model_to_checkpoint(cfg, str(plain))
    assert cfg.model.backbone.pretrained is None  # the checkpoint holds every CLIP weight
    assert cfg.model.backbone.adapter['block_size'] == 128

    cfg = Config.fromfile(cfg_path)
    tool.adapt_model_to_checkpoint(cfg, str(merged))
    assert cfg.model.backbone.pretrained is None and cfg.model.backbone.adapter is None
