"""The tools read checkpoints through the one safe reader (issue 12, item 4).

Before: ``tools/test.py`` refused a valid legacy (non-zip) checkpoint and a text or empty file
alike with "mmap can only be used with files saved with _use_new_zipfile_serialization=True".
"""
import pytest
import torch

pytest.importorskip('mmseg')

from tests.conftest import run_tool  # noqa: E402
from tests.tools.tiny_fcn import write_squares_dataset, write_tiny_fcn_config  # noqa: E402


@pytest.fixture(scope='module')
def fcn(tmp_path_factory, repo_root):
    """A tiny stock MMSeg model, its dataset and a legacy-format checkpoint of it."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_hclip  # noqa: F401
    tmp = tmp_path_factory.mktemp('formats')
    write_squares_dataset(str(tmp / 'data'))
    cfg = write_tiny_fcn_config(tmp / 'tiny_fcn.py', repo_root, tmp / 'data')
    init_default_scope('mmseg')
    model = MODELS.build(Config.fromfile(str(cfg)).model)
    legacy = tmp / 'legacy.pth'
    torch.save({'meta': {'iter': 1}, 'state_dict': model.state_dict()}, legacy,
               _use_new_zipfile_serialization=False)
    return tmp, cfg, legacy


def test_tools_test_evaluates_a_legacy_checkpoint(fcn):
    tmp, cfg, legacy = fcn
    proc = run_tool(['tools/test.py', str(cfg), str(legacy), '--work-dir', str(tmp / 'w')])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert 'mIoU' in out


def test_tools_test_names_a_text_file(fcn):
    tmp, cfg, _ = fcn
    text = tmp / 'not_a_checkpoint.pth'
    text.write_text('version https://git-lfs.github.com/spec/v1\noid sha256:abc\n')
    proc = run_tool(['tools/test.py', str(cfg), str(text), '--work-dir', str(tmp / 't')])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert 'tools/test.py: error:' in out and str(text) in out and 'text file' in out, out[-2000:]
    assert 'Accepted' in out and 'Traceback' not in out


def test_read_checkpoint_refuses_foreign_layouts(tmp_path):
    from mmseg_hclip.apis.inference import read_checkpoint
    clip_only = tmp_path / 'ViT-B-16.pth'
    torch.save({'visual.conv1.weight': torch.zeros(1), 'logit_scale': torch.ones(())}, clip_only)
    with pytest.raises(ValueError, match=r'CLIP weights only.*model\.backbone\.pretrained='):
        read_checkpoint(str(clip_only))
    detectron2 = tmp_path / 'model_final.pth'
    torch.save({'model': {'sem_seg_head.predictor.transformer.head.weight': torch.zeros(1)},
                'iteration': 5}, detectron2)
    with pytest.raises(ValueError, match='catseg2mmseg.py'):
        read_checkpoint(str(detectron2))
    legacy = tmp_path / 'legacy.pth'
    torch.save({'state_dict': {'module.backbone.w': torch.ones(2)}}, legacy,
               _use_new_zipfile_serialization=False)
    state_dict, meta = read_checkpoint(str(legacy), mmap=True)
    assert list(state_dict) == ['backbone.w'] and meta == {}
