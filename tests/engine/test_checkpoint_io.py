"""Atomic checkpoint writes and the --resume fallback onto the newest readable checkpoint
(issue 12, item 3 of the probes: a torn file behind ``last_checkpoint``)."""
import builtins
import errno
import os

import pytest
import torch
from mmengine.runner.checkpoint import save_checkpoint

import mmseg_hclip  # noqa: F401  (registers the atomic local backend and the safe loader)
from mmseg_hclip.engine import checkpoint_io
from mmseg_hclip.engine.checkpoint_io import (CheckpointUnreadableError, atomic_write,
                                              resolve_resume_checkpoint)


def _ckpt(step):
    return {'meta': {'iter': step, 'epoch': 0}, 'state_dict': {'w': torch.full((4096, ), step)}}


class _TornFile:
    """A file object whose write stops half-way with ``error`` (kill / preemption / full disk)."""

    def __init__(self, f, error):
        self._f, self._error = f, error

    def write(self, data):
        self._f.write(data[:len(data) // 2])
        self._f.flush()
        raise self._error

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()
        return False


@pytest.mark.parametrize('error', [KeyboardInterrupt(), OSError(errno.ENOSPC, 'No space left')],
                         ids=['interrupt', 'disk-full'])
def test_interrupted_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch, error):
    path = tmp_path / 'iter_2.pth'
    save_checkpoint(_ckpt(1), str(path))  # mmengine's saver, as runner.save_checkpoint uses
    real_open = builtins.open

    def torn_open(file, mode='r', *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return _TornFile(f, error) if ('w' in mode or 'x' in mode) and 'b' in mode else f

    monkeypatch.setattr(builtins, 'open', torn_open)
    with pytest.raises(type(error)):
        save_checkpoint(_ckpt(2), str(path))
    monkeypatch.undo()
    # the old checkpoint is still whole (the old backend left a truncated file here)
    assert torch.load(str(path), weights_only=True)['meta']['iter'] == 1
    assert os.listdir(tmp_path) == ['iter_2.pth']  # no temporary file left behind


def test_atomic_write_replaces_and_follows_symlinks(tmp_path):
    target = tmp_path / 'real.txt'
    target.write_text('old')
    link = tmp_path / 'link.txt'
    link.symlink_to(target)
    atomic_write(str(link), lambda f: f.write('new'), 'w', encoding='utf-8')
    assert link.is_symlink() and target.read_text() == 'new'
    from mmengine.fileio import get_file_backend
    backend = get_file_backend(str(tmp_path / 'x.pth'))
    assert type(backend).__name__ == 'AtomicLocalBackend'
    backend.put(b'abc', str(tmp_path / 'sub' / 'x.pth'))  # creates the directory, as before
    assert (tmp_path / 'sub' / 'x.pth').read_bytes() == b'abc'


@pytest.fixture
def work(tmp_path):
    for step in (1, 2, 3):
        torch.save(_ckpt(step), str(tmp_path / f'iter_{step}.pth'))
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_3.pth'))
    return tmp_path


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])


@pytest.fixture
def logged(monkeypatch):
    messages = []
    monkeypatch.setattr(checkpoint_io, 'print_log', lambda msg, **kw: messages.append(msg))
    return messages


def test_readable_last_checkpoint_is_used_silently(work, logged):
    assert resolve_resume_checkpoint(str(work)) == str(work / 'iter_3.pth')
    assert not logged
    assert resolve_resume_checkpoint(str(work / 'empty')) is None  # nothing to resume


def test_torn_last_checkpoint_falls_back_to_the_newest_readable(work, logged):
    _truncate(work / 'iter_3.pth')
    assert resolve_resume_checkpoint(str(work)) == str(work / 'iter_2.pth')
    (message, ) = logged
    assert 'iter_3.pth' in message and 'iter_2.pth' in message and 'cannot be read' in message
    _truncate(work / 'iter_2.pth')
    assert resolve_resume_checkpoint(str(work)) == str(work / 'iter_1.pth')
    # --resume PATH onto a torn file: the same, beside it
    assert resolve_resume_checkpoint(str(work), str(work / 'iter_3.pth')) == \
        str(work / 'iter_1.pth')


def test_no_readable_checkpoint_stops_naming_both(work):
    for step in (1, 2, 3):
        _truncate(work / f'iter_{step}.pth')
    with pytest.raises(CheckpointUnreadableError) as err:
        resolve_resume_checkpoint(str(work))
    message = str(err.value)
    assert f"checkpoint {work / 'iter_3.pth'}" in message and str(work) in message
    assert 'iter_2.pth (' in message and 'iter_1.pth (' in message


def test_pointer_torn_or_naming_a_missing_file(work, logged):
    (work / 'last_checkpoint').write_text('')  # torn pointer
    assert resolve_resume_checkpoint(str(work)) == str(work / 'iter_3.pth')
    (work / 'last_checkpoint').write_text(str(work / 'iter_9.pth'))  # deleted meanwhile
    assert resolve_resume_checkpoint(str(work)) == str(work / 'iter_3.pth')
    assert 'does not exist' in logged[-1]


def test_not_a_training_checkpoint_is_skipped_and_a_typo_is_an_error(work, logged):
    _truncate(work / 'iter_3.pth')
    torch.save({'state_dict': {}, 'meta': {'hclip_merged': True}}, str(work / 'merged.pth'))
    os.utime(work / 'merged.pth')  # newest file, but no iteration: not resumable
    assert resolve_resume_checkpoint(str(work)) == str(work / 'iter_2.pth')
    with pytest.raises(FileNotFoundError, match='iter_7.pth'):
        resolve_resume_checkpoint(str(work), str(work / 'iter_7.pth'))
