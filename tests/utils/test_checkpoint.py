"""Safe checkpoint loading: the allow-list admits mmengine types and nothing else."""
import os

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import _load_checkpoint

from mmseg_hclip.utils import UnsafeCheckpointError, load_checkpoint_safely


def test_mmengine_objects_roundtrip(tmp_path):
    buf = HistoryBuffer()
    for v in (1.0, 3.0, 2.0):
        buf.update(v)
    ckpt = {
        'state_dict': {'w': torch.arange(3.)},
        'meta': {'seed': np.int64(3), 'lr': np.float64(0.5), 'arr': np.arange(4)},
        'message_hub': {'log_scalars': {'loss': buf}},
    }
    path = tmp_path / 'ok.pth'
    torch.save(ckpt, path)
    out = load_checkpoint_safely(str(path))
    assert torch.equal(out['state_dict']['w'], ckpt['state_dict']['w'])
    assert out['meta']['seed'] == 3 and out['meta']['lr'] == 0.5
    np.testing.assert_array_equal(out['meta']['arr'], np.arange(4))
    loaded = out['message_hub']['log_scalars']['loss']
    assert loaded.min() == 1.0 and loaded.max() == 3.0 and loaded.mean() == 2.0
    # mmengine's own loader goes through the safe backend too.
    assert _load_checkpoint(str(path))['meta']['seed'] == 3


class _Callable:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


class _Getattr:
    """A getattr other than HistoryBuffer's statistics methods."""

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


@pytest.mark.parametrize('kind', ['callable', 'getattr'])
def test_unsafe_checkpoint_refused(tmp_path, kind):
    marker = tmp_path / 'ran'
    payload = _Callable(marker) if kind == 'callable' else _Getattr()
    path = tmp_path / 'bad.pth'
    torch.save({'state_dict': {}, 'x': payload}, path)
    with pytest.raises(UnsafeCheckpointError, match='bad.pth'):
        load_checkpoint_safely(str(path))
    with pytest.raises(UnsafeCheckpointError):
        _load_checkpoint(str(path))
    assert not marker.exists()


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_checkpoint_safely(str(tmp_path / 'nope.pth'))
