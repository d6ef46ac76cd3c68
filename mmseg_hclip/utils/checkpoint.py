"""One safe reader for every checkpoint and weight file the project accepts.

Every tool reads checkpoints through :func:`load_checkpoint_safely` (``tools/test.py``,
``tools/demo.py``, ``mmseg_hclip.apis``, ``tools/merge_weights.py``, ``--resume`` and
``load_from`` through mmengine's ``CheckpointLoader``) and the backbone reads CLIP weights
(``pretrained=``) through :func:`read_clip_state_dict`. No code path loads with
``weights_only=False``. Accepted formats, told apart by their first bytes, not by the file
name:

* a PyTorch checkpoint written by ``torch.save`` (zip format, memory-mapped on request, or
  the legacy ``_use_new_zipfile_serialization=False`` format), read by torch's safe
  unpickler (``weights_only=True``) with the allow-list below;
* a safetensors file (``*.safetensors``, e.g. open_clip's ``open_clip_model.safetensors``
  on the Hugging Face hub), read by the ``safetensors`` package (no pickle at all);
* OpenAI's TorchScript CLIP archives (``ViT-B-16.pt``, ``ViT-L-14-336px.pt``), read by
  :func:`read_torchscript_state_dict` without TorchScript (see there).

Anything else (an empty file, a text file, a plain pickle, a truncated zip) raises
:class:`CheckpointFormatError` naming the path, what was found and the accepted formats.

Allow-list. torch >= 2.6 unpickles with ``weights_only=True``, which refuses every Python
global that is not allow-listed. mmengine 0.10.x checkpoints contain a few such globals (its
message hub stores ``HistoryBuffer`` objects holding numpy arrays and numpy scalars), so
loading and ``--resume`` fail out of the box. Turning safe loading off would let a
checkpoint execute arbitrary code; instead we allow-list *exactly* the types that
mmengine / MMSeg checkpoints contain:

* ``mmengine.logging.HistoryBuffer`` and the numpy array / scalar / dtype
  reconstructors;
* ``builtins.getattr``, mapped to :func:`_history_buffer_getattr`, a
  restricted version that only resolves the statistics methods of
  ``HistoryBuffer`` (``min``, ``max``, ``mean``, ``current``) that the buffer
  pickles by reference. Any other ``getattr`` in a checkpoint is refused;
* ``builtins.bytes``, mapped to :func:`_restricted_bytes`: pickle protocol 2 writes the
  empty data buffer of an empty numpy array (e.g. an empty ``HistoryBuffer``) as
  ``bytes()``; only that call and a copy of a bytes object are allowed.

Everything else (for example a pickled callable such as ``os.system``) is
refused by torch's safe unpickler before it can run; :func:`load_checkpoint_safely`
turns torch's message into one that names the file, the offending global and
what to do.
"""
import ast
import os.path as osp
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

__all__ = [
    'safe_checkpoint_globals', 'register_safe_checkpoint_globals', 'load_checkpoint_safely',
    'UnsafeCheckpointError', 'CheckpointFormatError', 'ACCEPTED_FORMATS', 'checkpoint_format',
    'read_torchscript_state_dict', 'torchscript_uses_quick_gelu', 'read_clip_state_dict',
    'OPENAI_METADATA_KEYS', 'describe_clip_state_dict'
]

_REGISTERED = False
_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')

#: What :func:`load_checkpoint_safely` reads, for error messages.
ACCEPTED_FORMATS = (
    'a PyTorch checkpoint written by torch.save (zip or legacy format; .pth/.pt/.bin), '
    'a safetensors file (.safetensors), or an OpenAI TorchScript CLIP archive '
    '(ViT-B-16.pt, ViT-L-14-336px.pt)')
#: Scalar buffers of OpenAI's CLIP archives that are not model weights (open_clip drops
#: them too, in ``build_model_from_openai_state_dict``).
OPENAI_METADATA_KEYS = ('input_resolution', 'context_length', 'vocab_size')

# torch's legacy (non-zip) format starts with a protocol-2 pickle of this magic number.
_LEGACY_MAGIC = (0x1950a86a20f9469cfc6c).to_bytes(10, 'little')
_ZIP_MAGIC = b'PK\x03\x04'


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint contains a Python object that is not allow-listed."""


class CheckpointFormatError(ValueError):
    """A file is not in any accepted checkpoint format (or is damaged)."""


# --------------------------------------------------------------------------- allow-list
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


def _restricted_bytes(*args: Any) -> bytes:
    """``bytes()`` as pickle protocol 2 writes it for an empty buffer, nothing more.

    ``bytes(n)`` with an integer (an allocation of n bytes chosen by the file) and any other
    constructor form are refused.
    """
    if not args:
        return b''
    if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
        return bytes(args[0])
    raise UnsafeCheckpointError(
        f'refusing bytes{tuple(type(a).__name__ for a in args)} while unpickling a '
        'checkpoint: only bytes() (an empty buffer) and bytes(<bytes>) are allowed')


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
    return [
        HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr'),
        (_restricted_bytes, 'builtins.bytes')
    ] + _numpy_globals()


def register_safe_checkpoint_globals() -> None:
    """Allow-list the checkpoint globals and route mmengine's local loader here.

    Idempotent. Called when :mod:`mmseg_hclip` is imported (and by
    :func:`load_checkpoint_safely`), so ``tools/train.py --resume`` and
    ``tools/test.py CKPT`` work with torch's safe loading left on.
    """
    global _REGISTERED
    if _REGISTERED:
        return
    if hasattr(torch.serialization, 'add_safe_globals'):
        torch.serialization.add_safe_globals(safe_checkpoint_globals())
    from mmengine.runner.checkpoint import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_safely, force=True)
    _REGISTERED = True


# ------------------------------------------------------------------------ format detection
def _format_error(path: str, found: str) -> CheckpointFormatError:
    return CheckpointFormatError(f'{path!r} is not a checkpoint: {found}. Accepted: '
                                 f'{ACCEPTED_FORMATS}.')


def _describe_bytes(head: bytes) -> str:
    text = head[:40]
    try:
        decoded = text.decode('utf-8')
    except UnicodeDecodeError:
        return f'it starts with the bytes {text[:16]!r}'
    if decoded.isprintable() or all(c.isprintable() or c in '\r\n\t' for c in decoded):
        return f'it is a text file (starts with {decoded[:30]!r})'
    return f'it starts with the bytes {text[:16]!r}'


def checkpoint_format(path: str) -> str:
    """Tell a checkpoint's format from its first bytes.

    Args:
        path (str): A file.

    Returns:
        str: ``'zip'`` (torch.save), ``'torchscript'`` (a TorchScript archive, e.g. OpenAI's
        CLIP ``.pt`` files), ``'legacy'`` (torch.save with
        ``_use_new_zipfile_serialization=False``) or ``'safetensors'``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointFormatError: Anything else, naming what was found and the accepted formats.
    """
    path = osp.expanduser(str(path))
    if osp.isdir(path):
        raise _format_error(path, 'it is a directory; pass the checkpoint file inside it')
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path!r} can not be found')
    size = osp.getsize(path)
    if size == 0:
        raise _format_error(path, 'the file is empty (0 bytes; an interrupted download or save?)')
    with open(path, 'rb') as f:
        head = f.read(64)
    if head.startswith(_ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            raise _format_error(
                path, f'it is a damaged zip archive ({size} bytes, no central directory: '
                'truncated by an interrupted save or download?)')
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if any(n.endswith('data.pkl') for n in names) and any(
                n.endswith('constants.pkl') or '/code/' in n for n in names):
            return 'torchscript'
        if any(n.endswith('data.pkl') for n in names):
            return 'zip'
        raise _format_error(path, 'it is a zip archive without a torch data.pkl')
    if head[:1] == b'\x80' and _LEGACY_MAGIC in head[:16]:
        return 'legacy'
    if len(head) >= 9:
        (header_len, ) = struct.unpack('<Q', head[:8])
        if 0 < header_len <= size - 8 and head[8:9] == b'{':
            return 'safetensors'
    if head[:1] == b'\x80':
        raise _format_error(path, 'it is a plain Python pickle, not a torch checkpoint (a '
                            'pickle can execute code when loaded; re-save its tensors with '
                            'torch.save or safetensors)')
    raise _format_error(path, _describe_bytes(head))


# ---------------------------------------------------------------------- TorchScript archives
_STORAGE_DTYPES = {
    'HalfStorage': torch.float16,
    'FloatStorage': torch.float32,
    'DoubleStorage': torch.float64,
    'BFloat16Storage': torch.bfloat16,
    'LongStorage': torch.int64,
    'IntStorage': torch.int32,
    'ShortStorage': torch.int16,
    'CharStorage': torch.int8,
    'ByteStorage': torch.uint8,
    'BoolStorage': torch.bool,
}


class _StorageKind:
    """Stands for ``torch.<X>Storage`` inside a persistent id: only its dtype is used."""

    def __init__(self, name: str):
        self.name, self.dtype = name, _STORAGE_DTYPES[name]


class _ScriptObjectRecord:
    """An inert record of one pickled TorchScript object (a module): class name + state.

    Nothing of the class is executed; pickle's BUILD hands the attribute dict to
    :meth:`__setstate__`, which only stores it.
    """
    qualname = ''

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _rebuild_tensor(storage: torch.Tensor, offset: int, size, stride, requires_grad=False,
                    backward_hooks=None, metadata=None) -> torch.Tensor:
    """Our stand-in for ``torch._utils._rebuild_tensor_v2``: a strided view of the storage
    (``as_strided`` checks the bounds)."""
    if not isinstance(storage, torch.Tensor):
        raise UnsafeCheckpointError('a tensor in the archive does not refer to a storage')
    return storage.as_strided(tuple(size), tuple(stride), int(offset))


def _rebuild_parameter(data: torch.Tensor, requires_grad=False, backward_hooks=None):
    return data


def _identity_tag(value: Any, *args: Any) -> Any:  # torch.jit._pickle.restore_type_tag
    return value


def _build_list(value: Any) -> Any:  # torch.jit._pickle.build_intlist & co.
    return list(value)


_JIT_PICKLE_FUNCS = {
    'restore_type_tag': _identity_tag,
    'build_intlist': _build_list,
    'build_doublelist': _build_list,
    'build_boollist': _build_list,
    'build_tensorlist': _build_list,
}


class _TorchScriptUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript archive's ``data.pkl`` into records and tensors only.

    ``find_class`` is the only way a pickle can reach a Python object (the "restricting
    globals" recipe of the ``pickle`` documentation); here it returns inert record classes
    for TorchScript types (``__torch__.*``), our own tensor-rebuild functions for torch's,
    ``OrderedDict``, and refuses everything else.
    """

    def __init__(self, file, zf: zipfile.ZipFile, prefix: str, path: str):
        super().__init__(file)
        self._zf, self._prefix, self._path = zf, prefix, path
        self._storages: Dict[str, torch.Tensor] = {}
        self._records: Dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == '__torch__' or module.startswith('__torch__.'):
            qualname = f'{module}.{name}'
            if qualname not in self._records:
                self._records[qualname] = type(name, (_ScriptObjectRecord, ),
                                               dict(qualname=qualname, __slots__=()))
            return self._records[qualname]
        if module == 'torch._utils' and name == '_rebuild_tensor_v2':
            return _rebuild_tensor
        if module == 'torch._utils' and name == '_rebuild_parameter':
            return _rebuild_parameter
        if module == 'collections' and name == 'OrderedDict':
            return OrderedDict
        if module == 'torch' and name in _STORAGE_DTYPES:
            return _StorageKind(name)
        if module == 'torch.jit._pickle' and name in _JIT_PICKLE_FUNCS:
            return _JIT_PICKLE_FUNCS[name]
        raise UnsafeCheckpointError(
            f'refused to read the TorchScript archive {self._path!r}: its data.pkl refers to '
            f'{module}.{name}, which is not a module record, tensor or storage. Nothing from '
            'it was run.')

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'
                and isinstance(pid[1], _StorageKind)):
            raise UnsafeCheckpointError(f'{self._path}: unexpected persistent id {pid!r}')
        _, kind, key, _location, numel = pid
        key = str(key)
        if key not in self._storages:
            record = f'{self._prefix}data/{key}'
            try:
                data = self._zf.read(record)
            except KeyError:
                raise CheckpointFormatError(f'{self._path!r}: the TorchScript archive lacks '
                                            f'the tensor record {record!r} (damaged file?)')
            itemsize = torch.empty((), dtype=kind.dtype).element_size()
            if len(data) < int(numel) * itemsize:
                raise CheckpointFormatError(
                    f'{self._path!r}: tensor record {record!r} holds {len(data)} bytes, '
                    f'{int(numel) * itemsize} expected (damaged file?)')
            data = bytearray(data[:int(numel) * itemsize])
            self._storages[key] = (torch.frombuffer(data, dtype=kind.dtype)
                                   if numel else torch.empty(0, dtype=kind.dtype))
        return self._storages[key]


_CLASS_LINE = re.compile(r'^class\s+(\w+)\s*\(')
_DECL_LINE = re.compile(r'^\s+(__parameters__|__buffers__)\s*=\s*(\[.*\])\s*$')


def _torchscript_declarations(zf: zipfile.ZipFile, prefix: str) -> Dict[str, set]:
    """Parameter and buffer names of every class defined in the archive's ``code/``.

    TorchScript writes each module class with ``__parameters__ = [...]`` and
    ``__buffers__ = [...]`` lines; only those lines are read (``ast.literal_eval`` of a
    list of strings), nothing is executed.
    """
    decl: Dict[str, set] = {}
    code_root = f'{prefix}code/'
    for name in zf.namelist():
        if not (name.startswith(code_root) and name.endswith('.py')):
            continue
        module = name[len(code_root):-3].replace('/', '.')
        current = None
        for line in zf.read(name).decode('utf-8', errors='replace').splitlines():
            m = _CLASS_LINE.match(line)
            if m:
                current = f'{module}.{m.group(1)}'
                decl.setdefault(current, set())
                continue
            m = _DECL_LINE.match(line)
            if m and current is not None:
                try:
                    names = ast.literal_eval(m.group(2))
                except (ValueError, SyntaxError):
                    continue
                decl[current].update(str(n) for n in names)
    return decl


def _archive_prefix(zf: zipfile.ZipFile, path: str) -> str:
    pkls = [n for n in zf.namelist() if n.endswith('data.pkl') and n.count('/') <= 1]
    if not pkls:
        raise CheckpointFormatError(f'{path!r}: the archive has no top-level data.pkl')
    return pkls[0][:-len('data.pkl')]


def read_torchscript_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The parameters and buffers of a TorchScript archive, read without TorchScript.

    Why not ``torch.jit.load``: loading a TorchScript archive compiles and runs the code it
    carries (``code/``), so it is as unsafe as unpickling arbitrary objects, and
    ``torch.load(weights_only=True)`` refuses such archives. An archive is a zip of
    ``data.pkl`` (the module tree: objects of TorchScript classes whose attribute dicts hold
    the tensors, pickled with persistent ids that point at the raw tensor records
    ``data/<key>``), ``constants.pkl`` and ``code/``. We unpickle ``data.pkl`` with a
    restricted unpickler (:class:`_TorchScriptUnpickler`) that turns each module object
    into an inert record and each tensor into a strided view of its raw record, and refuses
    any other global; the parameter/buffer names of each class are read from the
    ``__parameters__`` / ``__buffers__`` declarations in ``code/`` (text, not executed).
    The result equals ``torch.jit.load(path).state_dict()`` (tested).

    Args:
        path (str): A TorchScript archive (e.g. OpenAI's ``ViT-B-16.pt``).

    Returns:
        dict[str, Tensor]: ``state_dict()``-style names -> CPU tensors (the archive's dtypes;
        OpenAI's CLIP archives are mostly float16).

    Raises:
        CheckpointFormatError: Not a readable TorchScript archive.
        UnsafeCheckpointError: ``data.pkl`` refers to anything but module records, tensors
            and storages.
    """
    path = osp.expanduser(str(path))
    with zipfile.ZipFile(path) as zf:
        prefix = _archive_prefix(zf, path)
        byteorder = f'{prefix}byteorder'
        if byteorder in zf.namelist() and zf.read(byteorder).strip() not in (b'', b'little'):
            raise CheckpointFormatError(f'{path!r}: a big-endian TorchScript archive is not '
                                        'supported; re-save its state dict with torch.save.')
        decl = _torchscript_declarations(zf, prefix)
        with zf.open(f'{prefix}data.pkl') as f:
            root = _TorchScriptUnpickler(f, zf, prefix, path).load()
    if not isinstance(root, _ScriptObjectRecord):
        raise CheckpointFormatError(f'{path!r}: the TorchScript archive does not hold a module')
    out: Dict[str, torch.Tensor] = OrderedDict()

    def collect(record: _ScriptObjectRecord, prefix: str) -> None:
        state = getattr(record, 'state', None)
        if not isinstance(state, dict):
            return
        names = decl.get(record.qualname)
        for key, value in state.items():
            if isinstance(value, _ScriptObjectRecord):
                collect(value, f'{prefix}{key}.')
            elif isinstance(value, torch.Tensor) and (names is None or key in names):
                out[f'{prefix}{key}'] = value

    collect(root, '')
    return out


def torchscript_uses_quick_gelu(path: str) -> Optional[bool]:
    """Whether a TorchScript archive defines a ``QuickGELU`` module class (OpenAI's CLIPs do).

    Returns:
        bool | None: None if ``path`` is not a TorchScript archive.
    """
    try:
        if checkpoint_format(path) != 'torchscript':
            return None
    except (CheckpointFormatError, FileNotFoundError):
        return None
    with zipfile.ZipFile(osp.expanduser(str(path))) as zf:
        prefix = _archive_prefix(zf, path)
        return any(name.rsplit('.', 1)[-1] == 'QuickGELU'
                   for name in _torchscript_declarations(zf, prefix))


# -------------------------------------------------------------------------------- reader
def _to_device(obj: Dict[str, torch.Tensor], map_location: Any) -> Dict[str, torch.Tensor]:
    if map_location is None or str(map_location) == 'cpu':
        return obj
    if callable(map_location) or isinstance(map_location, dict):
        raise ValueError('map_location must be a device for safetensors/TorchScript files')
    return OrderedDict((k, v.to(map_location)) for k, v in obj.items())


def load_checkpoint_safely(filename: str, map_location: Any = None, mmap: bool = False) -> Any:
    """Read any accepted checkpoint file safely (see the module docstring).

    Args:
        filename (str): Path of a checkpoint file.
        map_location: As for :func:`torch.load` (safetensors and TorchScript files: a
            device or None).
        mmap (bool): Memory-map the tensors instead of reading them (cheap
            when only ``meta`` is needed). Applies to zip-format torch files only; the
            other formats are read normally. Defaults to False.

    Returns:
        The unpickled checkpoint (usually a dict); for safetensors and TorchScript files the
        dict of their tensors (a TorchScript archive gives its ``state_dict()``).

    Raises:
        FileNotFoundError: If ``filename`` does not exist.
        CheckpointFormatError: Empty, text, plain-pickle, damaged or otherwise
            unreadable files, naming the path and the accepted formats.
        UnsafeCheckpointError: If the checkpoint pickles anything outside the
            allow-list; nothing from it is executed.
    """
    register_safe_checkpoint_globals()
    filename = osp.expanduser(str(filename))
    fmt = checkpoint_format(filename)
    if fmt == 'safetensors':
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return _to_device(load_file(filename, device='cpu'), map_location)
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointFormatError(f'{filename!r}: unreadable safetensors file '
                                        f'({err}).') from None
    if fmt == 'torchscript':
        return _to_device(read_torchscript_state_dict(filename), map_location)
    try:
        return torch.load(filename, map_location=map_location, weights_only=True,
                          mmap=bool(mmap) and fmt == 'zip')
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
    except (RuntimeError, EOFError) as err:
        raise CheckpointFormatError(
            f'{filename!r}: could not read this {fmt}-format torch checkpoint (damaged or '
            f'truncated file?): {type(err).__name__}: {err}') from None


def load_from_local_safely(filename: str, map_location: Any = None) -> Any:
    """mmengine ``CheckpointLoader`` backend for local paths (safe loading)."""
    return load_checkpoint_safely(filename, map_location)


def read_clip_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """CLIP weights from any accepted file, as a flat state dict in open_clip's key layout.

    Accepts OpenAI's TorchScript archives (``ViT-B-16.pt``, ...), OpenAI/open_clip state
    dicts, open_clip training checkpoints (``{'state_dict': ...}``, DDP ``module.``
    prefixes removed) and the Hugging Face hub files of open_clip
    (``open_clip_pytorch_model.bin``, ``open_clip_model.safetensors``). OpenAI's CLIP keys
    are open_clip's ``CLIP`` keys; their scalar metadata (:data:`OPENAI_METADATA_KEYS`) is
    dropped as open_clip's ``build_model_from_openai_state_dict`` does. Tensors keep their
    dtype (``load_state_dict`` casts them to the model's).

    Args:
        path (str): The weights file.

    Returns:
        dict[str, Tensor]: name -> tensor.

    Raises:
        FileNotFoundError, CheckpointFormatError, UnsafeCheckpointError: as
            :func:`load_checkpoint_safely`; CheckpointFormatError also when the file holds
            no state dict of tensors.
    """
    ckpt = load_checkpoint_safely(path, map_location='cpu')
    state_dict = ckpt
    if isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict):
        state_dict = ckpt['state_dict']
    if not isinstance(state_dict, dict) or not state_dict:
        raise CheckpointFormatError(
            f'{path!r} holds a {type(state_dict).__name__}, not a CLIP state dict '
            '(name -> tensor). Accepted: ' + ACCEPTED_FORMATS + '.')
    bad = [str(k) for k, v in state_dict.items()
           if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointFormatError(
            f'{path!r} is not a CLIP state dict: entries {bad[:5]} are not name -> tensor '
            f'(keys: {sorted(map(str, state_dict))[:5]} ...).')
    if all(k.startswith('module.') for k in state_dict):
        state_dict = {k[len('module.'):]: v for k, v in state_dict.items()}
    return OrderedDict((k, v) for k, v in state_dict.items() if k not in OPENAI_METADATA_KEYS)


def describe_clip_state_dict(state_dict: Dict[str, torch.Tensor]) -> str:
    """A one-line description of a CLIP state dict's architecture (for error messages)."""
    try:
        conv = state_dict['visual.conv1.weight']
        layers = len({k.split('.')[3] for k in state_dict
                      if k.startswith('visual.transformer.resblocks.')})
        grid = round((state_dict['visual.positional_embedding'].shape[0] - 1)**0.5)
        text_layers = len({k.split('.')[2] for k in state_dict
                           if k.startswith('transformer.resblocks.')})
        return (f'ViT with image width {conv.shape[0]}, {layers} image blocks, patch '
                f'{conv.shape[-1]}, native grid {grid}x{grid} (image {grid * conv.shape[-1]}), '
                f'text width {state_dict["ln_final.weight"].shape[0]}, {text_layers} text '
                f'blocks, joint width {state_dict["text_projection"].shape[-1]}')
    except (KeyError, IndexError, AttributeError):
        keys = sorted(state_dict)
        return f'not a ViT CLIP state dict (keys {keys[:4]} ...)'

