"""tools/test.py refuses labels that training refuses (issue 12, probe #2): a label holding
ids >= the class count (not the ignore index) used to be scored with those pixels silently
dropped, which inflated aAcc. The setting of the probe: the tiny H-CLIP on the shapes data
(ShapesDataset, MMSeg's LoadAnnotations), whole mode."""
import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_tool
from tests.tools.test_merge_weights import make_tiny_checkpoint

CONFIG = '''
_base_ = ['{root}/configs/_base_/models/hclip_tiny.py', '{root}/configs/_base_/default_runtime.py']
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                 dict(type='PackSegInputs')]
test_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type='ShapesDataset', generate=False, data_root='{data}',
                 data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
                 pipeline=test_pipeline))
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_cfg = dict(type='TestLoop')
model = dict(test_cfg=dict(_delete_=True, mode='whole'))
'''


@pytest.fixture(scope='module')
def setup(tmp_path_factory, repo_root):
    from mmseg_hclip.quickstart.shapes import generate_shapes_dataset
    tmp = tmp_path_factory.mktemp('eval_labels')
    data = tmp / 'shapes'
    generate_shapes_dataset(str(data), num_train=1, num_val=2, size=64, seed=0)
    cfg = tmp / 'tiny_shapes_test.py'
    cfg.write_text(CONFIG.format(root=repo_root, data=data))
    ckpt = make_tiny_checkpoint(str(tmp / 'tiny.pth'))
    return tmp, data, cfg, ckpt


def test_out_of_range_label_is_refused_naming_file_and_values(setup):
    tmp, data, cfg, ckpt = setup
    path = data / 'ann_dir' / 'val' / '00001.png'
    label = np.array(Image.open(path))
    label[:8, :8] = 200  # 13 classes, ignore index 255: 200 is neither
    label[8, :5] = 13
    Image.fromarray(label).save(path)
    proc = run_tool(['tools/test.py', str(cfg), ckpt, '--work-dir', str(tmp / 'bad')])
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert 'aAcc' not in out
    assert f'{path}: label values 13 (5 px), 200 (64 px) are neither a class id ' \
           '(0..12, 13 classes) or the ignore index 255' in out, out[-3000:]
