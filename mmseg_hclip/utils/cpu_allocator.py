"""Whether freed CPU memory stays in the process for reuse (glibc ``malloc`` settings).

PyTorch takes CPU tensor memory from ``malloc``. glibc serves every block above its mmap
threshold (which it raises to at most 32 MiB) with a fresh ``mmap`` and returns it to the
kernel on ``free``. So each large tensor of each training step is new memory, and the kernel
zeroes it page by page on first touch. A ViT-B/16 training step at 384² with 171 classes
allocates and frees about 14 GB that way: 3.6 million page faults per cost-aggregation-head
step on this project's 2-core machine, where the head's forward + backward took 0.6–0.7× the
time once freed memory was kept (``tools/analysis/profile_train_step.py``, docs/profile_train_step.md).

``set_cpu_allocator('keep')`` makes glibc serve every block from its heap (``M_MMAP_MAX = 0``)
and never return the heap's free top to the kernel (``M_TRIM_THRESHOLD = -1``): memory that a
step frees is reused by the next step without page faults. The cost: the process keeps its
peak heap until it exits (its resident size does not shrink after a peak), and reuse leaves
gaps: a whole ViT-B/16 training step (384², 171 classes) peaked at 10.3 GiB resident instead
of 7.7 GiB, stable from the second of 8 steps, while the steps took 15.6–16.9 s instead of
24.2–25.6 s on this project's 2-core machine. Numbers do not change (only where tensors
live). ``'default'`` restores glibc's behaviour for large blocks
(mmap above 32 MiB, the threshold glibc itself settles at) and hands the free heap back
(``malloc_trim``). Other C libraries (musl, macOS, Windows): nothing is changed.

Plain Python (ctypes), no mm* imports; :class:`~mmseg_hclip.engine.hooks.CPUAllocatorHook`
applies it for a run.
"""
import ctypes
import sys
from typing import Optional

__all__ = ['ALLOCATOR_MODES', 'set_cpu_allocator', 'cpu_allocator_mode']

ALLOCATOR_MODES = ('keep', 'default')

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_DEFAULT_MMAP_MAX = 65536  # glibc's default
_MAX_MMAP_THRESHOLD = 32 * 1024 * 1024  # where glibc's dynamic threshold stops (64-bit)

_mode: Optional[str] = None  # None: never set by this module


def _glibc():
    """The C library when it is glibc (has ``mallopt`` and ``malloc_trim``), else None."""
    if not sys.platform.startswith('linux'):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def set_cpu_allocator(mode: str, release: bool = True) -> bool:
    """Set how the process's C allocator treats large blocks (see the module docstring).

    Args:
        mode (str): ``'keep'`` (freed memory stays in the process for reuse) or
            ``'default'`` (glibc's behaviour: large blocks are mapped and unmapped).
        release (bool): with ``'default'``: hand the free heap back to the kernel now and
            trim it as glibc does. ``False`` leaves the heap that ``'keep'`` grew in place
            (large blocks are still mapped and unmapped), so that one process can time
            both modes in alternation without re-growing that heap each time.

    Returns:
        bool: True when the setting took effect; False where the C library is not glibc.

    Raises:
        ValueError: for another ``mode``.
        RuntimeError: if glibc refuses a setting.
    """
    global _mode
    if mode not in ALLOCATOR_MODES:
        raise ValueError(f'cpu allocator mode {mode!r}; use one of {ALLOCATOR_MODES} '
                         "('keep': reuse freed memory, no page faults; 'default': glibc's)")
    libc = _glibc()
    if libc is None:
        return False
    if mode == 'keep':
        settings = [(_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)]
    else:
        settings = [(_M_MMAP_THRESHOLD, _MAX_MMAP_THRESHOLD), (_M_MMAP_MAX, _DEFAULT_MMAP_MAX),
                    (_M_TRIM_THRESHOLD, 2 * _MAX_MMAP_THRESHOLD if release else -1)]
    for param, value in settings:
        if libc.mallopt(param, value) != 1:
            raise RuntimeError(f'glibc mallopt({param}, {value}) failed while setting the '
                               f'cpu allocator to {mode!r}')
    if mode == 'default' and release:
        libc.malloc_trim(0)
    _mode = mode
    return True


def cpu_allocator_mode() -> Optional[str]:
    """The mode last set by :func:`set_cpu_allocator` (None: never set, glibc's own)."""
    return _mode
