"""Shared machinery of the benchmark converters in this folder.

Every converter follows the same contract:

* ``RAW_DIR`` is the official download, extracted; a wrong or incomplete
  folder is refused before anything is written, with a message naming the
  missing path and where to get it.
* Output goes to ``--out-dir`` (``data/<benchmark>``) as
  ``images/<split>/...`` and ``annotations/<split>/...``.
* Finished files are never overwritten unless ``--overwrite``; a re-run after
  an interruption skips every finished image. Each file is written to a
  temporary name and renamed, so no half-written file ever carries a real name.
* ``--nproc`` worker processes, a progress bar, and a summary (images
  written / skipped / dropped, classes seen) saved to
  ``<out-dir>/conversion_summary.json``.
* The number of input images is checked against the official count; pass
  ``--no-count-check`` to convert a subset on purpose (a warning says so).
* A label value outside the valid range stops the run with the file name and
  the value.

The converters import nothing from mmseg / mmcv / torch: numpy, Pillow,
OpenCV, tqdm (and scipy for PC-459) suffice.
"""
import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import Pool
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover - tqdm is a requirement
    tqdm = None

PARTIAL_SUFFIX = '.partial'
SUMMARY_NAME = 'conversion_summary.json'


class ConversionError(Exception):
    """A problem with the input that the user must fix; the message says what and how."""


# --------------------------------------------------------------------------
# package data (read without importing mmseg_hclip, which pulls in mmseg)
# --------------------------------------------------------------------------
def classnames_dir() -> Path:
    """The package's ``mmseg_hclip/data/classnames`` folder."""
    here = Path(__file__).resolve()
    candidate = here.parents[2] / 'mmseg_hclip' / 'data' / 'classnames'
    if candidate.is_dir():
        return candidate
    import importlib.util
    spec = importlib.util.find_spec('mmseg_hclip')
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / 'data' / 'classnames'
        if candidate.is_dir():
            return candidate
    raise ConversionError('cannot find mmseg_hclip/data/classnames; run the converters from '
                          'the repository checkout or install mmseg_hclip')


def load_classnames(key: str) -> List[str]:
    """Class names of a benchmark from the package's ``<key>.json``."""
    with open(classnames_dir() / f'{key}.json', encoding='utf-8') as f:
        return json.load(f)


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------
def build_parser(description: str, benchmark: str, raw_help: str) -> argparse.ArgumentParser:
    """The arguments every converter shares."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('raw_dir', metavar='RAW_DIR', help=raw_help)
    parser.add_argument('--out-dir', default=f'data/{benchmark}',
                        help=f'output folder (default: data/{benchmark})')
    parser.add_argument('--nproc', type=int, default=min(8, os.cpu_count() or 1),
                        help='worker processes (default: min(8, CPU count))')
    parser.add_argument('--overwrite', action='store_true',
                        help='redo and overwrite files that are already finished')
    parser.add_argument('--no-count-check', action='store_true',
                        help='accept an input whose image count differs from the official '
                        'one (for converting a subset on purpose)')
    return parser


def add_image_mode_argument(parser: argparse.ArgumentParser) -> None:
    """``--image-mode`` for converters that reuse the raw JPEGs unchanged."""
    parser.add_argument(
        '--image-mode', choices=('hardlink', 'copy', 'symlink'), default='hardlink',
        help='how unchanged images are placed in the output: hardlink (default; falls '
        'back to copy across file systems), copy, or symlink')


def run_main(main: Callable[[Optional[Sequence[str]]], dict],
             argv: Optional[Sequence[str]] = None) -> int:
    """Run ``main`` and turn a ``ConversionError`` into a clear message and exit code 2."""
    try:
        main(argv)
    except ConversionError as err:
        print(f'\nerror: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('\ninterrupted: finished files are kept; re-run the same command to resume',
              file=sys.stderr)
        return 130
    return 0


# --------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------
def require_dir(path: Path, what: str, hint: str) -> Path:
    """Return ``path`` if it is a folder, else raise a ``ConversionError``."""
    if not path.is_dir():
        raise ConversionError(f'missing folder {path} ({what}). {hint}')
    return path


def require_file(path: Path, what: str, hint: str) -> Path:
    """Return ``path`` if it is a file, else raise a ``ConversionError``."""
    if not path.is_file():
        raise ConversionError(f'missing file {path} ({what}). {hint}')
    return path


def first_existing(candidates: Iterable[Path], what: str, hint: str,
                   kind: str = 'dir') -> Path:
    """The first existing candidate; the error lists every place that was tried."""
    candidates = list(candidates)
    for path in candidates:
        if (path.is_dir() if kind == 'dir' else path.is_file()):
            return path
    tried = ', '.join(str(p) for p in candidates)
    raise ConversionError(f'cannot find {what}; looked for {tried}. {hint}')


def find_voc_root(raw: Path, year: int, hint: str) -> Path:
    """``VOCdevkit/VOC<year>`` (the folder holding ``JPEGImages``) given itself,
    ``VOCdevkit`` or the folder the tar was extracted into."""
    candidates = [raw, raw / f'VOC{year}', raw / 'VOCdevkit' / f'VOC{year}']
    for path in candidates:
        if (path / 'JPEGImages').is_dir():
            return path
    tried = ', '.join(str(p / 'JPEGImages') for p in candidates)
    raise ConversionError(f'cannot find the VOC{year} images; looked for {tried}. {hint}')


def require_files_exist(paths: Sequence[Path], what: str, hint: str) -> None:
    """Raise one error naming the first few of ``paths`` that do not exist."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ', '.join(str(p) for p in missing[:5])
        more = f' and {len(missing) - 5} more' if len(missing) > 5 else ''
        raise ConversionError(f'{len(missing)} {what} missing: {shown}{more}. {hint}')


def check_count(found: int, expected: Optional[int], split: str, source: str,
                no_count_check: bool) -> None:
    """Compare the number of input images of a split with the official count."""
    if found == 0:
        raise ConversionError(
            f'split {split!r} is empty: no images found in {source}. '
            'Check that RAW_DIR is the extracted download and the split name is right.')
    if expected is None or found == expected:
        return
    if no_count_check:
        print(f'WARNING: converting {found} {split} images, not the official {expected} '
              f'(--no-count-check). The result is NOT the full benchmark; its scores are '
              'not comparable with published numbers.', file=sys.stderr)
        return
    raise ConversionError(
        f'found {found} {split} images in {source}, expected {expected}. The download looks '
        'incomplete or RAW_DIR points at the wrong folder. If you are converting a subset on '
        'purpose, pass --no-count-check.')


def check_label_values(values: np.ndarray, valid: np.ndarray, path, meaning: str) -> None:
    """Stop with the file and the value when a raw label is not allowed.

    Args:
        values (np.ndarray): Unique raw values of one label file.
        valid (np.ndarray): Boolean table, ``valid[v]`` True for allowed values.
        path: The file (named in the error).
        meaning (str): What the allowed values are, for the message.
    """
    values = np.asarray(values).astype(np.int64)
    bad = values[(values < 0) | (values >= len(valid))]
    if bad.size == 0:
        bad = values[~valid[values]]
    if bad.size:
        raise ConversionError(
            f'{path}: label value {int(bad[0])} is outside the valid range ({meaning}); '
            'the file is corrupted or not from the expected download')


# --------------------------------------------------------------------------
# reading and writing
# --------------------------------------------------------------------------
def read_label_image(path: Path) -> np.ndarray:
    """Read a single-channel label image (grayscale, palette indices or 16-bit)."""
    with Image.open(path) as img:
        if img.mode not in ('L', 'P', 'I', 'I;16', 'I;16B', 'I;16L', '1'):
            raise ConversionError(
                f'{path}: expected a single-channel or palette label image, got mode '
                f'{img.mode!r}')
        return np.array(img)


def read_rgb(path: Path) -> np.ndarray:
    """Read an image as an (H, W, 3) uint8 RGB array."""
    with Image.open(path) as img:
        return np.array(img.convert('RGB'))


def _partial_path(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL_SUFFIX)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_path(path)
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)


def encode_png(label: np.ndarray) -> bytes:
    """Encode a (H, W) uint8 or uint16 array as a single-channel PNG."""
    if label.ndim != 2 or label.dtype not in (np.uint8, np.uint16):
        raise ValueError(f'expected a 2-D uint8/uint16 label, got {label.dtype} {label.shape}')
    ok, buf = cv2.imencode('.png', np.ascontiguousarray(label))
    if not ok:
        raise RuntimeError('PNG encoding failed')
    return buf.tobytes()


def write_label_png(path: Path, label: np.ndarray) -> None:
    """Atomically write a uint8 / uint16 single-channel PNG."""
    atomic_write_bytes(path, encode_png(label))


def write_jpeg(path: Path, rgb: np.ndarray, quality: int = 75) -> None:
    """Atomically write an RGB array as JPEG (Pillow, default quality 75)."""
    import io
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format='JPEG', quality=quality)
    atomic_write_bytes(path, buf.getvalue())


def place_file(src: Path, dst: Path, mode: str = 'hardlink') -> None:
    """Put ``src`` at ``dst`` unchanged (hardlink, copy or symlink), atomically."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _partial_path(dst)
    if tmp.exists() or tmp.is_symlink():
        tmp.unlink()
    if mode == 'symlink':
        os.symlink(os.path.abspath(src), tmp)
    elif mode == 'hardlink':
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def remove_partials(root: Path) -> int:
    """Delete temporary files left by an interrupted run; returns how many."""
    count = 0
    if root.is_dir():
        for tmp in root.rglob('*' + PARTIAL_SUFFIX):
            tmp.unlink()
            count += 1
    return count


# --------------------------------------------------------------------------
# the conversion loop
# --------------------------------------------------------------------------
@dataclass
class Task:
    """One image to convert.

    Attributes:
        key (str): Image id, shown in errors.
        split (str): Output split folder.
        outputs (tuple[Path]): Files the task writes; all existing = finished.
        payload (dict): Whatever the converter's worker needs.
    """
    key: str
    split: str
    outputs: Tuple[Path, ...]
    payload: dict = field(default_factory=dict)


#: worker return values: status and the unique train ids written (or None)
WRITTEN, DROPPED = 'written', 'dropped'


def _call(worker: Callable, task: Task):
    return task.split, worker(task)


def run_tasks(tasks: List[Task], worker: Callable, args: argparse.Namespace, *,
              splits: Sequence[str], benchmark: str, num_classes: int, ignore_index: int,
              class_names: Optional[Sequence[str]] = None,
              expected: Optional[Dict[str, int]] = None,
              input_counts: Optional[Dict[str, int]] = None,
              extra_summary: Optional[dict] = None) -> dict:
    """Run ``worker`` over the unfinished tasks and print / save a summary.

    Args:
        tasks (list[Task]): All images of the requested splits.
        worker (callable): ``worker(task) -> (status, unique_ids)``; a
            picklable top-level function (or ``functools.partial`` of one).
        args (Namespace): Parsed common arguments.
        splits (Sequence[str]): The requested splits (an empty one is an error).
        benchmark (str): Name used in messages.
        num_classes (int): Number of train ids, for the "classes seen" count.
        ignore_index (int): Value excluded from the classes seen.
        class_names (Sequence[str], optional): For naming unseen classes.
        expected (dict, optional): Official image count per split.
        input_counts (dict, optional): Input images per split when it differs
            from the number of tasks (defaults to counting the tasks).
        extra_summary (dict, optional): Added to the saved summary.

    Returns:
        dict: The summary that was saved to ``<out-dir>/conversion_summary.json``.
    """
    out_dir = Path(args.out_dir)
    counts = {split: 0 for split in splits}
    if input_counts is not None:
        counts.update(input_counts)
    else:
        for task in tasks:
            counts[task.split] = counts.get(task.split, 0) + 1
    for split, found in counts.items():
        check_count(found, (expected or {}).get(split), split, args.raw_dir,
                    args.no_count_check)

    stale = remove_partials(out_dir)
    if stale:
        print(f'removed {stale} unfinished temporary file(s) left by an interrupted run')

    if args.overwrite:
        todo, finished = list(tasks), []
    else:
        todo = [t for t in tasks if not all(p.is_file() for p in t.outputs)]
        finished = [t for t in tasks if all(p.is_file() for p in t.outputs)]
    per_split = {s: dict(written=0, skipped=0, dropped=0) for s in counts}
    for task in finished:
        per_split.setdefault(task.split, dict(written=0, skipped=0, dropped=0))
        per_split[task.split]['skipped'] += 1
    if finished:
        print(f'{len(finished)} image(s) already finished in {out_dir}, skipped '
              '(pass --overwrite to redo them)')

    seen = np.zeros(num_classes, dtype=bool)
    start = time.time()
    bar = tqdm(total=len(todo), desc=benchmark, unit='img', dynamic_ncols=True) \
        if tqdm is not None else None
    call = partial(_call, worker)
    nproc = max(1, int(args.nproc))
    if nproc == 1 or len(todo) <= 1:
        results = map(call, todo)
        pool = None
    else:
        pool = Pool(nproc)
        chunksize = max(1, min(32, len(todo) // (4 * nproc)))
        results = pool.imap_unordered(call, todo, chunksize=chunksize)
    try:
        for split, (status, ids) in results:
            per_split.setdefault(split, dict(written=0, skipped=0, dropped=0))
            per_split[split][status] += 1
            if ids is not None:
                ids = np.asarray(ids).astype(np.int64)
                ids = ids[(ids != ignore_index) & (ids >= 0) & (ids < num_classes)]
                seen[ids] = True
            if bar is not None:
                bar.update(1)
    except BaseException:
        if pool is not None:
            pool.terminate()
        raise
    finally:
        if bar is not None:
            bar.close()
        if pool is not None:
            pool.close()
            pool.join()

    elapsed = time.time() - start
    summary = dict(
        benchmark=benchmark,
        raw_dir=str(args.raw_dir),
        out_dir=str(out_dir),
        splits=per_split,
        input_images=counts,
        expected_images=expected or {},
        count_check=not args.no_count_check,
        classes_seen_this_run=int(seen.sum()),
        num_classes=num_classes,
        ignore_index=ignore_index,
        seconds=round(elapsed, 1))
    if extra_summary:
        summary.update(extra_summary)
    _print_summary(summary, seen, class_names)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / SUMMARY_NAME,
                       (json.dumps(summary, indent=2) + '\n').encode('utf-8'))
    return summary


def _print_summary(summary: dict, seen: np.ndarray, class_names: Optional[Sequence[str]]) -> None:
    lines = [f"\n{summary['benchmark']}: done in {summary['seconds']} s -> {summary['out_dir']}"]
    for split, c in summary['splits'].items():
        line = (f"  {split}: {c['written']} written, {c['skipped']} already finished"
                f" (input {summary['input_images'].get(split, '?')}")
        exp = summary['expected_images'].get(split)
        if exp is not None:
            line += f', official {exp}'
        line += ')'
        if c['dropped']:
            line += f", {c['dropped']} dropped (no labelled pixel)"
        lines.append(line)
    lines.append(f"  images on disk: "
                 f"{sum(c['written'] + c['skipped'] for c in summary['splits'].values())}")
    n_written = sum(c['written'] for c in summary['splits'].values())
    if n_written:
        lines.append(f"  classes seen in the {n_written} image(s) written this run: "
                     f"{int(seen.sum())} of {len(seen)} (ignore value "
                     f"{summary['ignore_index']} excluded)")
        unseen = np.flatnonzero(~seen)
        if class_names is not None and 0 < unseen.size <= 10:
            lines.append('  not seen: ' + ', '.join(
                f'{i} {class_names[i]!r}' for i in unseen))
    print('\n'.join(lines))
