"""End to end (issue 12, silent wrong result #1): a checkpoint trained with
``orthogonal='text'`` and evaluated with ``orthogonal=none`` scored mIoU 3.00 instead of 18.90
without a word. Now tools/train.py writes the model settings into every checkpoint, and
tools/test.py, tools/demo.py / init_model, --resume and tools/merge_weights.py refuse a config
that differs, printing the setting, both values and the --cfg-options that match."""
import importlib.util
import os.path as osp

import pytest
import torch

from tests.conftest import ROOT, run_tool
from tests.tools.test_train_test_hclip import CONFIG, TEST_CLASSES, TRAIN_CLASSES
from tests.tools.tiny_fcn import write_squares_dataset

ORTHO = 'model.backbone.adapter.orthogonal'


@pytest.fixture(scope='module')
def trained(tmp_path_factory, repo_root):
    tmp = tmp_path_factory.mktemp('settings_e2e')
    write_squares_dataset(str(tmp / 'data'), n_train=2, n_val=1, size=96)
    cfg = tmp / 'hclip_tiny_squares.py'
    cfg.write_text(CONFIG.format(root=repo_root, data=tmp / 'data', train=TRAIN_CLASSES,
                                 test=TEST_CLASSES))
    work = tmp / 'work'
    proc = run_tool(['tools/train.py', str(cfg), '--work-dir', str(work), '--cfg-options',
                     f'{ORTHO}=text', 'train_cfg.val_interval=100'])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return tmp, cfg, work / 'iter_2.pth'


def test_checkpoint_records_the_settings(trained):
    _, _, ckpt = trained
    import mmseg_hclip  # noqa: F401  (safe-loading allow-list)
    meta = torch.load(str(ckpt), map_location='cpu', weights_only=True)['meta']
    record = meta['hclip_model_settings']
    assert record['backbone.adapter.orthogonal'] == 'text'
    assert record['backbone.adapter.type'] == 'HCLIPAdapter'
    assert record['neck.templates'] == 'single'


def test_test_tool_refuses_another_adapter_setting(trained):
    tmp, cfg, ckpt = trained
    proc = run_tool(['tools/test.py', str(cfg), str(ckpt), '--work-dir', str(tmp / 'test'),
                     '--cfg-options', f'{ORTHO}=none'])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert f"{ORTHO}: 'text' (checkpoint) vs 'none' (config)" in out, out[-3000:]
    assert f'--cfg-options {ORTHO}=text' in out, out[-3000:]
    assert 'Iter(test)' not in out  # nothing was evaluated


def test_init_model_and_demo_refuse_another_setting(trained):
    from mmseg_hclip.apis import init_model
    from mmseg_hclip.engine.model_settings import ModelSettingsMismatchError
    tmp, cfg, ckpt = trained
    cayley = 'model.backbone.adapter.cayley_convention'
    with pytest.raises(ModelSettingsMismatchError, match=f'{cayley}=paper'):
        init_model(str(cfg), str(ckpt), cfg_options={cayley: 'official'})
    init_model(str(cfg), str(ckpt))  # the training config itself loads

    spec = importlib.util.spec_from_file_location('hclip_demo_tool',
                                                  osp.join(ROOT, 'tools', 'demo.py'))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    image = next((tmp / 'data' / 'img_dir' / 'val').glob('*.jpg'))
    with pytest.raises(SystemExit, match="sides: 'input' \\(checkpoint\\) vs 'official'"):
        demo.main([str(image), '--vocabulary', 'square,sky', '--config', str(cfg),
                   '--checkpoint', str(ckpt), '--out', str(tmp / 'demo.png'),
                   '--cfg-options', 'model.backbone.adapter.sides=official'])


def test_merged_checkpoint_keeps_the_record(trained):
    from mmseg_hclip.apis import init_model, merge_checkpoint
    from mmseg_hclip.engine.model_settings import ModelSettingsMismatchError
    tmp, cfg, ckpt = trained
    out = merge_checkpoint(str(cfg), str(ckpt), str(tmp / 'merged.pth'))['checkpoint']
    import mmseg_hclip  # noqa: F401
    meta = torch.load(out, map_location='cpu', weights_only=True)['meta']
    assert meta['hclip_model_settings']['backbone.adapter.orthogonal'] == 'text'
    init_model(str(cfg), out, cfg_options={ORTHO: 'none'})  # folded in: the knob is moot
    with pytest.raises(ModelSettingsMismatchError, match='model.neck.templates=single'):
        init_model(str(cfg), out, cfg_options={'model.neck.templates': 'imagenet80'})


def test_resume_refuses_another_setting(trained):
    tmp, cfg, ckpt = trained
    proc = run_tool(['tools/train.py', str(cfg), '--work-dir', str(ckpt.parent), '--resume',
                     '--cfg-options', f'{ORTHO}=none', 'train_cfg.max_iters=3'])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert f"{ORTHO}: 'text' (checkpoint) vs 'none' (config)" in out, out[-3000:]
    assert not (ckpt.parent / 'iter_3.pth').exists()
