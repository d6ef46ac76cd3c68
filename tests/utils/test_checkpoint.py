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


# ------------------------------------------------------------------ formats (issue 11/12)
from collections import OrderedDict  # noqa: E402
import pickle  # noqa: E402
import zipfile  # noqa: E402

from mmseg_hclip.utils.checkpoint import (CheckpointFormatError,  # noqa: E402
                                          checkpoint_format, read_clip_state_dict,
                                          read_torchscript_state_dict,
                                          torchscript_uses_quick_gelu)


@pytest.mark.parametrize('mmap', [False, True])
def test_legacy_format_loads(tmp_path, mmap):
    """A checkpoint saved with _use_new_zipfile_serialization=False loads (mmap or not)."""
    ckpt = {'state_dict': {'w': torch.arange(6.).view(2, 3)}, 'meta': {'seed': np.int64(7)}}
    path = tmp_path / 'legacy.pth'
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    assert checkpoint_format(str(path)) == 'legacy'
    out = load_checkpoint_safely(str(path), map_location='cpu', mmap=mmap)
    assert torch.equal(out['state_dict']['w'], ckpt['state_dict']['w'])
    assert out['meta']['seed'] == 7
    assert torch.equal(_load_checkpoint(str(path))['state_dict']['w'], ckpt['state_dict']['w'])


def test_empty_numpy_arrays_and_history_buffer_in_meta(tmp_path):
    """Protocol-2 pickles write an empty array's buffer as bytes(): allowed, nothing else."""
    ckpt = {
        'meta': {'empty': np.zeros(0), 'empty2d': np.zeros((0, 3), np.float32),
                 'ints': np.array([], dtype=np.int64)},
        'message_hub': {'log_scalars': {'loss': HistoryBuffer()}},
        'state_dict': {'w': torch.ones(1)},
    }
    path = tmp_path / 'empty_meta.pth'
    torch.save(ckpt, path)
    out = load_checkpoint_safely(str(path))
    for key in ('empty', 'empty2d', 'ints'):
        assert out['meta'][key].shape == ckpt['meta'][key].shape
        assert out['meta'][key].dtype == ckpt['meta'][key].dtype
    assert len(out['message_hub']['log_scalars']['loss'].data[0]) == 0
    assert _load_checkpoint(str(path))['meta']['empty'].shape == (0, )


class _BigBytes:
    def __reduce__(self):
        return (bytes, (10**12, ))


def test_bytes_with_a_size_is_refused(tmp_path):
    path = tmp_path / 'bytes.pth'
    torch.save({'x': _BigBytes()}, path)
    with pytest.raises(UnsafeCheckpointError, match='bytes'):
        load_checkpoint_safely(str(path))


def _write_not_checkpoints(tmp_path):
    files = {}
    files['empty'] = tmp_path / 'empty.pth'
    files['empty'].write_bytes(b'')
    files['text'] = tmp_path / 'notes.pth'
    files['text'].write_text('this is not a checkpoint\n')
    files['pickle'] = tmp_path / 'plain.pkl'
    files['pickle'].write_bytes(pickle.dumps({'w': [1, 2]}, protocol=2))
    good = tmp_path / 'good.pth'
    torch.save({'w': torch.zeros(1000)}, good)
    files['truncated'] = tmp_path / 'torn.pth'
    files['truncated'].write_bytes(good.read_bytes()[:2000])
    files['zip'] = tmp_path / 'other.zip'
    with zipfile.ZipFile(files['zip'], 'w') as zf:
        zf.writestr('readme.txt', 'hi')
    files['directory'] = tmp_path / 'a_dir.pth'
    files['directory'].mkdir()
    return files


@pytest.mark.parametrize('kind', ['empty', 'text', 'pickle', 'truncated', 'zip', 'directory'])
def test_not_a_checkpoint_names_path_and_formats(tmp_path, kind):
    path = str(_write_not_checkpoints(tmp_path)[kind])
    expected = {'empty': 'empty', 'text': 'text file', 'pickle': 'plain Python pickle',
                'truncated': 'damaged zip', 'zip': 'without a torch data.pkl',
                'directory': 'directory'}[kind]
    with pytest.raises(CheckpointFormatError) as info:
        load_checkpoint_safely(path, mmap=True)
    msg = str(info.value)
    assert path in msg and expected in msg and 'Accepted' in msg and 'safetensors' in msg
    with pytest.raises(CheckpointFormatError):
        read_clip_state_dict(path)


def test_safetensors_roundtrip(tmp_path):
    from safetensors.torch import save_file
    sd = {'a': torch.randn(3, 4), 'b': torch.arange(5, dtype=torch.int64)}
    path = tmp_path / 'open_clip_model.safetensors'
    save_file(sd, str(path))
    assert checkpoint_format(str(path)) == 'safetensors'
    out = load_checkpoint_safely(str(path), mmap=True)
    assert sorted(out) == ['a', 'b'] and all(torch.equal(out[k], sd[k]) for k in sd)
    # renamed: detected by content, not by the file name
    other = tmp_path / 'weights.bin'
    other.write_bytes(path.read_bytes())
    assert torch.equal(read_clip_state_dict(str(other))['a'], sd['a'])


def test_clip_state_dict_unwraps_open_clip_checkpoints(tmp_path):
    sd = OrderedDict([('visual.proj', torch.randn(4, 2)), ('logit_scale', torch.ones(())),
                      ('input_resolution', torch.tensor(224))])
    path = tmp_path / 'epoch_1.pt'
    torch.save({'epoch': 1, 'name': 'run', 'state_dict': {f'module.{k}': v for k, v in sd.items()}},
               path)
    out = read_clip_state_dict(str(path))
    assert list(out) == ['visual.proj', 'logit_scale']  # DDP prefix and OpenAI metadata gone
    torch.save({'state_dict': {'a': 1}}, path)
    with pytest.raises(CheckpointFormatError, match='not a CLIP state dict'):
        read_clip_state_dict(str(path))


class _Mixed(torch.nn.Module):
    """Parameters (one float16), a buffer, an unregistered tensor attribute, a submodule."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 3)
        self.proj = torch.nn.Parameter(torch.randn(3, 2).half())
        self.register_buffer('steps', torch.tensor(5))
        self.plain = torch.ones(3)

    def forward(self, x):
        return (self.lin(x) + self.plain) @ self.proj.float() + self.steps


@pytest.mark.parametrize('how', ['trace', 'script'])
def test_torchscript_reader_equals_jit_load(tmp_path, how):
    import warnings
    module = _Mixed().eval()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        jit = (torch.jit.trace(module, torch.randn(2, 4)) if how == 'trace' else
               torch.jit.script(module))
    path = tmp_path / f'{how}.pt'
    jit.save(str(path))
    assert checkpoint_format(str(path)) == 'torchscript'
    ours = read_torchscript_state_dict(str(path))
    reference = torch.jit.load(str(path)).state_dict()  # the reference: TorchScript itself
    assert list(ours) == list(reference)
    for key, value in reference.items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key
    assert 'plain' not in ours
    assert torchscript_uses_quick_gelu(str(path)) is False
    assert torchscript_uses_quick_gelu(str(tmp_path / 'missing.pt')) is None


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def test_torchscript_reader_refuses_code(tmp_path):
    """A TorchScript-looking archive whose data.pkl calls a function is refused unrun."""
    marker = tmp_path / 'ran'
    path = tmp_path / 'evil.pt'
    with zipfile.ZipFile(path, 'w') as zf:
        zf.writestr('evil/data.pkl', pickle.dumps(_Payload(marker), protocol=2))
        zf.writestr('evil/constants.pkl', pickle.dumps((), protocol=2))
        zf.writestr('evil/code/__torch__.py', 'class M(Module):\n  __parameters__ = []\n')
    assert checkpoint_format(str(path)) == 'torchscript'
    with pytest.raises(UnsafeCheckpointError, match='system'):
        load_checkpoint_safely(str(path))
    assert not marker.exists()
