"""Operator profile of the cost-aggregation head's inference forward on CPU.

The ViT-B/16 config's head (random weights) on random features of a 384² image (24×24 grid)
and ``--classes`` text embeddings, eval mode, no gradient: what the head costs per view in
inference with cached text embeddings. For each setup ``impl:allocator`` (as in
``profile_train_step.py``): the wall time of ``--repeats`` forwards (median) and the
operators with the most self CPU time in one forward, grouped into matrix products
(``mm``/``addmm``/``bmm``, convolutions, attention) and the rest.

    python tools/analysis/profile_head_inference.py [--classes 171] [--threads 2] \\
        [--setups fast:keep reference:default] [--out docs/profile_head_inference.md]
"""
import argparse
import os
import os.path as osp
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from mmengine.config import Config

import mmseg_hclip  # noqa: F401
from mmseg_hclip.utils.cpu_allocator import set_cpu_allocator

ROOT = osp.dirname(osp.dirname(osp.abspath(mmseg_hclip.__file__)))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from benchmark_peft import _cpu_name, write_report  # noqa: E402
from profile_train_step import op_table, parse_setup  # noqa: E402

PRODUCTS = ('aten::mm', 'aten::addmm', 'aten::bmm', 'aten::mkldnn_convolution',
            'aten::_scaled_dot_product_flash_attention_for_cpu')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=osp.join(ROOT, 'configs/_base_/models/hclip_vitb16.py'))
    parser.add_argument('--classes', type=int, default=171)
    parser.add_argument('--setups', nargs='+', type=parse_setup,
                        default=[('fast', 'keep'), ('reference', 'default')])
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--rows', type=int, default=15)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--out', default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    head_cfg = Config.fromfile(args.config).model.decode_head
    torch.manual_seed(0)
    head = MODELS.build(head_cfg).eval()
    grid = tuple(head_cfg.feature_size)
    g = torch.Generator().manual_seed(1)
    feats = dict(
        dense=torch.randn(1, head.in_channels, *grid, generator=g),
        guidance=[torch.randn(1, head.guidance_channels, *grid, generator=g)
                  for _ in head.decoder],
        text=F.normalize(torch.randn(args.classes, head.prompt_channels, head.in_channels,
                                     generator=g), dim=-1))
    load_before = os.getloadavg()
    results = {}
    for impl, alloc in args.setups:
        set_cpu_allocator(alloc)
        head.impl = impl

        def forward():
            with torch.no_grad():
                head(feats)
        forward.zero_grad = lambda: None
        forward()  # warm (and grow the heap with 'keep')
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            forward()
            times.append(time.perf_counter() - start)
        table = op_table(forward, 10**6)
        products = sum(secs for key, _, secs in table['rows'] if key in PRODUCTS)
        results[f'{impl}, {alloc}'] = (times, table, products, os.getloadavg()[0])
    set_cpu_allocator('default')
    lines = [
        '# Profile: the head\'s inference forward on CPU', '',
        'Produced by `python ' + ' '.join([osp.relpath(osp.abspath(__file__), ROOT)] +
                                          (argv if argv is not None else sys.argv[1:])) +
        '` (numbers below are from that one run).', '',
        f'- head of `{osp.relpath(args.config, ROOT)}` (random weights), features of one 384² '
        f'view ({grid[0]}×{grid[1]}), {args.classes} classes, eval (class pooling '
        f'{head_cfg.get("test_pool_size", 1)}), no gradient',
        f"- CPU: {_cpu_name() or 'unknown CPU'}, {os.cpu_count()} cores, "
        f'torch {torch.__version__}, '
        f'{torch.get_num_threads()} thread(s); load average before '
        f"{'/'.join(f'{x:.2f}' for x in load_before)}, after "
        f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())}", '',
        '| setup | median (s) | all runs (s) | profiled self CPU (s) | of which products (s) '
        '| load |', '| --- | ---: | --- | ---: | ---: | ---: |']
    for name, (times, table, products, load) in results.items():
        lines.append(f"| {name} | {statistics.median(times):.2f} | "
                     f"{', '.join(f'{t:.2f}' for t in times)} | {table['total_s']:.2f} | "
                     f'{products:.2f} | {load:.1f} |')
    lines += ['', 'Products: ' + ', '.join(f'`{p}`' for p in PRODUCTS) + '.']
    for name, (_, table, _, _) in results.items():
        lines += ['', f'## Operators of head[{name}] (one forward, self CPU time)', '',
                  '| operator | calls | self CPU (s) | share |', '| --- | ---: | ---: | ---: |']
        for key, count, secs in table['rows'][:args.rows]:
            lines.append(f'| `{key}` | {count} | {secs:.2f} | '
                         f"{100 * secs / table['total_s']:.1f}% |")
    report = '\n'.join(lines) + '\n'
    write_report(report, args.out)
    return results


if __name__ == '__main__':
    main()
