"""Pick the C++ standard that mmcv's C++ ops must be compiled with.

mmcv 2.1.0's ``setup.py`` hard-codes ``-std=c++17`` but the headers of
torch >= 2.14 use C++20 features. ``tools/install.sh`` calls this script to
decide whether the compiler wrapper has to swap the flag.

Usage::

    python tools/install/cxx_std.py 2.14.1   # prints c++20
    python tools/install/cxx_std.py          # uses the installed torch
"""
import re
import sys


def cxx_std_for_torch(version: str) -> str:
    """Return the ``-std`` value needed to compile extensions for ``version``.

    Args:
        version (str): A torch version string such as ``'2.14.1+cu130'``.

    Returns:
        str: ``'c++20'`` for torch >= 2.14, otherwise ``'c++17'``.

    Raises:
        ValueError: If ``version`` is not a torch version string.
    """
    match = re.match(r'^\s*(\d+)\.(\d+)', version)
    if match is None:
        raise ValueError(f'cannot read a torch version from {version!r}; '
                         'expected something like "2.14.1" or "2.1.0+cu121"')
    major, minor = int(match.group(1)), int(match.group(2))
    return 'c++20' if (major, minor) >= (2, 14) else 'c++17'


def main(argv) -> int:
    if len(argv) > 1:
        version = argv[1]
    else:
        import torch
        version = torch.__version__
    print(cxx_std_for_torch(version))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
