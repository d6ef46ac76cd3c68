"""Safe checkpoint loading for torch >= 2.6 (``weights_only=True``).

torch >= 2.6 unpickles checkpoints with ``weights_only=True`` by default, which
refuses every Python global that is not allow-listed. mmengine 0.10.x
checkpoints contain a few such globals (its message hub stores
``HistoryBuffer`` objects holding numpy arrays and numpy scalars), so loading
and ``--resume`` fail out of the box. Turning safe loading off would let a
checkpoint execute arbitrary code; instead we allow-list *exactly* the types
that mmengine / MMSeg checkpoints contain:

* ``mmengine.logging.HistoryBuffer`` and the numpy array / scalar / dtype
  reconstructors;
* ``builtins.getattr``, mapped to :func:`_history_buffer_getattr`, a
  restricted version that only resolves the statistics methods of
  ``HistoryBuffer`` (``min``, ``max``, ``mean``, ``current``) that the buffer
  pickles by reference. Any other ``getattr`` in a checkpoint is refused.

Everything else (for example a pickled callable such as ``os.system``) is
refused by torch's safe unpickler before it can run; :func:`load_checkpoint_safely`
turns torch's message into one that names the file, the offending global and
what to do.
"""
import os.path as osp
import pickle
from typing import Any, Callable, List, Tuple, Union

import numpy as np
import torch

__all__ = ['safe_checkpoint_globals', 'register_safe_checkpoint_globals',
           'load_checkpoint_safely', 'UnsafeCheckpointError']

_REGISTERED = False
_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint contains a Python object that is not allow-listed."""


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to HistoryBuffer's statistics methods.

    mmengine's ``HistoryBuffer`` pickles ``{'min': HistoryBuffer.min, ...}``,
    which the pickle protocol writes as ``getattr(HistoryBuffer, 'min')``.
    """
    from mmengine.logging import HistoryBuffer
    allowed = set(_DEFAULT_STATISTICS) | set(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and isinstance(name, str) and name in allowed:
        return getattr(HistoryBuffer, name)
    raise UnsafeCheckpointError(
        f'refusing getattr({obj!r}, {name!r}) while unpickling a checkpoint: only '
        'getattr(HistoryBuffer, <statistics method>) is allowed')


def _numpy_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """Numpy reconstructors under the names numpy 1.x and 2.x pickle them."""
    out: List[Union[Callable, Tuple[Callable, str]]] = [np.ndarray, np.dtype]
    try:  # numpy >= 2
        from numpy._core import multiarray as ma2
        out += [(ma2._reconstruct, 'numpy._core.multiarray._reconstruct'),
                (ma2.scalar, 'numpy._core.multiarray.scalar')]
        ma1 = ma2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray as ma1
    # Checkpoints written under numpy 1.x name numpy.core; allow both spellings.
    out += [(ma1._reconstruct, 'numpy.core.multiarray._reconstruct'),
            (ma1.scalar, 'numpy.core.multiarray.scalar')]
    # numpy >= 1.25 pickles dtypes by their class (numpy.dtypes.Float64DType, ...).
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        for name in dir(dtypes):
            cls = getattr(dtypes, name)
            if isinstance(cls, type) and issubclass(cls, np.dtype):
                out.append((cls, f'numpy.dtypes.{name}'))
    return out


def safe_checkpoint_globals() -> List[Union[Callable, Tuple[Callable, str]]]:
    """Return the allow-list of globals that mmengine/MMSeg checkpoints contain."""
    from mmengine.logging import HistoryBuffer
    return [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr')] + _numpy_globals()


def register_safe_checkpoint_globals() -> None:
    """Allow-list the checkpoint globals and route mmengine's local loader here.

    Idempotent. Called when :mod:`mmseg_hclip` is imported, so
    ``tools/train.py --resume`` and ``tools/test.py CKPT`` work with torch's
    safe loading left on.
    """
    global _REGISTERED
    if _REGISTERED:
        return
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(safe_checkpoint_globals())
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_safely, force=True)
    _REGISTERED = True


def load_checkpoint_safely(filename: str, map_location: Any = None, mmap: bool = False) -> Any:
    """``torch.load`` with ``weights_only=True`` and a clear refusal message.

    Args:
        filename (str): Path of a checkpoint file.
        map_location: As for :func:`torch.load`.
        mmap (bool): Memory-map the tensors instead of reading them (cheap
            when only ``meta`` is needed). Defaults to False.

    Returns:
        The unpickled checkpoint (usually a dict).

    Raises:
        FileNotFoundError: If ``filename`` does not exist.
        UnsafeCheckpointError: If the checkpoint pickles anything outside the
            allow-list; nothing from it is executed.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint {filename!r} can not be found')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if isinstance(err, UnsafeCheckpointError):
            raise UnsafeCheckpointError(f'{filename}: {err}') from None
        raise UnsafeCheckpointError(
            f'refused to load checkpoint {filename!r}: it pickles a Python object '
            'that is not on the allow-list of mmengine/MMSeg checkpoint types, and '
            'loading it could execute code. Nothing from it was run. If you trust '
            'the file, re-save its tensors only, e.g. torch.save({"state_dict": '
            'sd}, path), or add the needed type with '
            'torch.serialization.add_safe_globals([...]). torch said:\n'
            f'{err}') from None


def load_from_local_safely(filename: str, map_location: Any = None) -> Any:
    """mmengine ``CheckpointLoader`` backend for local paths (safe loading)."""
    return load_checkpoint_safely(filename, map_location)
