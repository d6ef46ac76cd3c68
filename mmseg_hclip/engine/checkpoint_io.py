# Copyright (c) mmseg_hclip contributors. Licensed under the Apache License 2.0.
"""Checkpoints that are never torn, and ``--resume`` that survives one that is.

* :class:`AtomicLocalBackend`: mmengine's local file backend with atomic writes: the bytes go to
  a temporary file in the same directory, are flushed to disk and renamed over the target
  (``os.replace``), so an interrupted save (kill, preemption, full disk) leaves the previous file
  intact and never a truncated one behind ``last_checkpoint``. Importing :mod:`mmseg_hclip`
  (``custom_imports`` in ``configs/_base_/default_runtime.py``) registers it for local paths, so
  every ``CheckpointHook`` and ``runner.save_checkpoint`` write through it.
* :func:`resolve_resume_checkpoint`: what ``tools/train.py --resume`` loads. A checkpoint that
  cannot be read (torn by a save without this backend, a damaged disk, a ``last_checkpoint``
  naming a file that is gone) is named and the newest readable checkpoint beside it is used, with
  a warning; with none, it stops naming both the unreadable file and where it looked.
"""
import contextlib
import logging
import os
import os.path as osp
import re
import uuid
import zipfile
from typing import Callable, List, Optional, Tuple

from mmengine.fileio import LocalBackend, register_backend
from mmengine.logging import print_log

__all__ = [
    'AtomicLocalBackend', 'atomic_write', 'register_atomic_local_backend',
    'CheckpointUnreadableError', 'resolve_resume_checkpoint'
]


def _fsync_dir(directory: str) -> None:
    """Persist a rename (POSIX; a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str, write: Callable, mode: str = 'wb', **open_kwargs) -> None:
    """Write a file so that readers see the old content or the new one, never a part.

    ``write(f)`` fills a temporary file ``.<name>.<pid>.<random>.tmp`` in the target's directory
    (the real one, when ``path`` is a symlink); the file is flushed and fsynced and then renamed
    over the target with :func:`os.replace`. On any error (or ``KeyboardInterrupt``) the
    temporary file is removed and the target is untouched.

    Args:
        path (str): The file to write.
        write (Callable): Called with the open temporary file.
        mode (str): ``'wb'`` or ``'w'``.
        **open_kwargs: For :func:`open` (e.g. ``encoding``).
    """
    target = osp.realpath(os.fspath(path))
    directory = osp.dirname(target)
    os.makedirs(directory, exist_ok=True)
    tmp = osp.join(directory, f'.{osp.basename(target)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp')
    try:
        with open(tmp, mode.replace('w', 'x'), **open_kwargs) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(directory)


class AtomicLocalBackend(LocalBackend):
    """mmengine's :class:`~mmengine.fileio.LocalBackend` whose ``put`` / ``put_text`` are
    atomic (:func:`atomic_write`). Reading, listing and removing are unchanged."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(filepath, lambda f: f.write(obj), 'wb')

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(filepath, lambda f: f.write(obj), 'w', encoding=encoding)


def register_atomic_local_backend() -> None:
    """Make :class:`AtomicLocalBackend` mmengine's backend for local paths (idempotent).

    Called when :mod:`mmseg_hclip` is imported; mmengine's ``save_checkpoint`` (used by
    ``CheckpointHook`` and ``runner.save_checkpoint``) then writes checkpoints atomically.
    """
    register_backend('local', AtomicLocalBackend, force=True, prefixes='')


# ----------------------------------------------------------------------------- resume
class CheckpointUnreadableError(RuntimeError):
    """``--resume`` found no readable checkpoint; the message names what was tried."""


_STEP = re.compile(r'(\d+)\.pth$')


def _problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be resumed from, or None when it can."""
    from mmseg_hclip.apis.inference import read_checkpoint
    if not osp.isfile(path):
        return 'the file does not exist'
    try:
        _, meta = read_checkpoint(path, mmap=True)
    except Exception as err:  # any failure to read is a reason to look further
        text = ' '.join(str(err).split()).split(' Accepted:')[0].rstrip('.')  # the cause only
        text = text.replace(f'{path!r} is ', '').replace(f'{path} is ', '')
        reason = text[:300] or type(err).__name__
        if 'bytes' not in text and not zipfile.is_zipfile(path):  # a torn zip lost its index
            reason += f'; {osp.getsize(path)} bytes without a zip central directory: torn?'
        return reason
    if 'iter' not in meta:
        return 'not a training checkpoint (its meta has no iteration)'
    return None


def _candidates(directory: str, exclude: str) -> List[str]:
    """``*.pth`` files in ``directory``, newest first (step number in the name, then mtime)."""
    try:
        names = [n for n in os.listdir(directory) if n.endswith('.pth') and not n.startswith('.')]
    except OSError:
        return []
    paths = [osp.join(directory, n) for n in names]
    paths = [p for p in paths if osp.isfile(p) and osp.realpath(p) != osp.realpath(exclude)]

    def key(p: str) -> Tuple[int, float]:
        m = _STEP.search(osp.basename(p))
        return (int(m.group(1)) if m else -1, osp.getmtime(p))

    return sorted(paths, key=key, reverse=True)


def resolve_resume_checkpoint(work_dir: str, requested: Optional[str] = None) -> Optional[str]:
    """The checkpoint to resume from, or None when there is nothing to resume.

    ``requested`` (``--resume PATH``) or, without it, the file ``work_dir/last_checkpoint``
    names. When that checkpoint cannot be read (or ``last_checkpoint`` is empty or names a file
    that is gone), the newest readable checkpoint in the same directory is returned and a
    warning names both. A ``requested`` path that does not exist is an error (a typo is not
    an interrupted run).

    Args:
        work_dir (str): The run's work directory.
        requested (str, optional): An explicit checkpoint path.

    Returns:
        str | None: A readable checkpoint; None without ``requested`` and without
        ``work_dir/last_checkpoint`` (a fresh start, as mmengine does).

    Raises:
        FileNotFoundError: ``requested`` does not exist.
        CheckpointUnreadableError: No readable checkpoint; names the unreadable one, why, and
            the directory searched (with the other files tried).
    """
    if requested is not None:
        if not osp.isfile(requested):
            raise FileNotFoundError(f'--resume {requested}: the file does not exist')
        wanted, subject = requested, f'checkpoint {requested} (given to --resume)'
        problem = _problem(wanted)
    else:
        pointer = osp.join(work_dir, 'last_checkpoint')
        if not osp.isfile(pointer):
            return None
        with open(pointer, encoding='utf-8', errors='replace') as f:
            wanted = f.read().strip()
        if wanted:
            subject = f'checkpoint {wanted} (named by {pointer})'
            problem = _problem(wanted)
        else:  # the pointer itself was torn: look beside it
            wanted, subject = pointer, pointer
            problem = 'it is empty: an interrupted write'
    if problem is None:
        return wanted
    directory = osp.dirname(osp.abspath(wanted))
    tried = []
    for candidate in _candidates(directory, exclude=wanted):
        why = _problem(candidate)
        if why is None:
            print_log(
                f'--resume: {subject} cannot be read ({problem}); '
                f'resuming from the newest readable checkpoint beside it, {candidate}, instead. '
                'The iterations after it are trained again.',
                logger='current', level=logging.WARNING)
            return candidate
        tried.append(f'{osp.basename(candidate)} ({why})')
    others = ('; the others are unreadable too: ' + ', '.join(tried)) if tried else \
        '; there is no other checkpoint there'
    raise CheckpointUnreadableError(
        f'cannot resume: {subject} cannot be read ({problem}), '
        f'and no readable checkpoint was found in {directory}{others}. Start without --resume '
        '(or with --resume PATH of a good checkpoint).')
