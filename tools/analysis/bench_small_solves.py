"""Time the batched Cayley solve with MKL's default threading and single-threaded (issue 12).

The Cayley map of every text block is one batched ``torch.linalg.solve`` of small q x q systems
(ViT-B/16 at q = 128: 4 text blocks x 48 positions = 192 systems). LAPACK (MKL) is called once
per matrix and threads each tiny call; ``mmseg_hclip.peft.block_transforms._serial_small_linalg``
therefore runs the solves single-threaded with MKL's *thread-local* setting. This script times,
interleaved in rounds (A B C, B C A, ...) so that a busy machine slows all alike:

* ``default``: the process's thread count (``--threads``);
* ``mkl thread-local 1``: what the adapter does (other threads unaffected);
* ``torch.set_num_threads(1)``: the process-wide switch the adapter used before (shown for
  comparison only: it changes the thread count of threads started meanwhile).

Usage::

    python tools/analysis/bench_small_solves.py --out docs/small_solve_threads.md
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_peft import _cpu_name, write_report  # noqa: E402
from mmseg_hclip.peft.block_transforms import (_mkl_set_local_threads,  # noqa: E402
                                               _serial_small_linalg)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=192, help='number of systems (192)')
    parser.add_argument('--block-size', type=int, default=128, help='q (128)')
    parser.add_argument('--threads', type=int, default=2, help='process thread count (2)')
    parser.add_argument('--rounds', type=int, default=9, help='interleaved rounds (9)')
    parser.add_argument('--calls', type=int, default=3, help='solves per timing (3)')
    parser.add_argument('--out', help='write the markdown report here')
    return parser.parse_args(argv)


def _uptime() -> str:
    try:
        return subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()
    except OSError:
        return 'n/a'



def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    P = 0.01 * torch.randn(args.batch, args.block_size, args.block_size, generator=g)
    Q = 0.5 * (P - P.mT)
    eye = torch.eye(args.block_size)
    A, B = eye - Q, eye + Q

    def default():
        torch.linalg.solve(A, B)

    def mkl_local():
        with _serial_small_linalg(torch.device('cpu')):
            torch.linalg.solve(A, B)

    def process_wide():
        torch.set_num_threads(1)
        try:
            torch.linalg.solve(A, B)
        finally:
            torch.set_num_threads(args.threads)

    fns = {f'default ({args.threads} threads)': default, 'mkl thread-local 1': mkl_local,
           'torch.set_num_threads(1)': process_wide}
    if _mkl_set_local_threads() is None:
        print('MKL thread-local setting unavailable in this torch build: the adapter does not '
              'switch threads here.')
        del fns['mkl thread-local 1']
    names = list(fns)
    load_before = _uptime()
    for fn in fns.values():  # warm-up
        fn()
    times = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            for _ in range(args.calls):
                fns[name]()
            times[name].append((time.perf_counter() - start) / args.calls)
    load_after = _uptime()
    base = statistics.median(times[names[0]])
    command = ' '.join(['python tools/analysis/bench_small_solves.py'] + list(argv or sys.argv[1:]))
    lines = [
        '# Small batched solves: threads', '',
        f'Produced by `{command}` (one run).', '',
        f'- {args.batch} systems of {args.block_size}×{args.block_size} (fp32), '
        f'`torch.linalg.solve`, {args.calls} calls per timing, {args.rounds} interleaved rounds',
        f'- {_cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, '
        f'MKL available: {torch.backends.mkl.is_available()}',
        f'- load before: `{load_before}`', f'- load after: `{load_after}`', '',
        '| setup | median per call (s) | all rounds (s) | ratio to default |',
        '| --- | ---: | --- | ---: |'
    ]
    for name in names:
        med = statistics.median(times[name])
        lines.append(f"| {name} | {med:.4f} | {', '.join(f'{t:.3f}' for t in times[name])} | "
                     f'{med / base:.3f} |')
    report = '\n'.join(lines) + '\n'
    write_report(report, args.out)
    return times


if __name__ == '__main__':
    main()
