"""Measured peak memory of H-CLIP inference against the estimate of mmseg_hclip.utils.memory.

Each point runs in a fresh subprocess: the segmentor is built from a model config with random
weights (no download; the real-size architecture), the vocabulary set to ``N`` dummy class
names, the text features computed once (a warm-up call on a small image), then the peak
resident memory is reset (``/proc/self/clear_refs``) and one ``inference_model`` (the
segmentor's ``predict``; or the demo's whole path: plan, inference, overlay drawing) runs on
a random image. Reported:

* ``RSS peak``: the rise of the process's resident high-water mark (``VmHWM``) over its
  resident size before the call (what an out-of-memory killer sees);
* ``estimate``: :func:`mmseg_hclip.utils.memory.estimate_inference_memory`.

Usage::

    python tools/analysis/inference_memory.py                # writes docs/memory.md
    python tools/analysis/inference_memory.py --points whole:384x512:20 reference:3000x4000:3
    python tools/analysis/inference_memory.py --point whole:384x512:20   # one point, JSON
"""
import argparse
import json
import os
import os.path as osp
import platform
import subprocess
import sys
import tempfile
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

ARCHS = {
    'ViT-B-16': 'configs/_base_/models/hclip_vitb16.py',
    'tiny': 'configs/_base_/models/hclip_tiny.py',
}
DEFAULT_POINTS = [
    'whole-native:512x768:20', 'whole-native:512x768:80', 'whole-native:768x1024:10',
    'whole:3000x4000:3', 'reference:3000x4000:3', 'demo:3000x4000:3', 'demo:3000x4000:150'
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='ViT-B-16', choices=sorted(ARCHS))
    parser.add_argument('--points', nargs='+', default=DEFAULT_POINTS,
                        help='MODE:HxW:CLASSES, MODE in whole, whole-native (CLIP at the '
                        'image size: resize_to_backbone=False), slide, reference, demo')
    parser.add_argument('--point', help='run one point in this process (JSON on stdout)')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--budget', type=float, default=4.0,
                        help='--memory-budget (GiB) of the demo points')
    parser.add_argument('--out', default=osp.join(ROOT, 'docs', 'memory.md'))
    return parser.parse_args(argv)


def _status(key: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(key + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak() -> None:
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')


def run_point(arch: str, point: str, budget: float) -> dict:
    import numpy as np
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_hclip  # noqa: F401
    from mmseg_hclip.apis import inference_model, show_result
    from mmseg_hclip.utils.memory import (estimate_inference_memory, fit_drawing_to_memory,
                                          fit_inference_to_memory, restore_prediction_size)
    mode, size, classes = point.split(':')
    height, width = (int(v) for v in size.split('x'))
    classes = int(classes)
    cfg = Config.fromfile(osp.join(ROOT, ARCHS[arch]))
    cfg.model.backbone.pretrained = None
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    model.cfg = cfg
    vocabulary = [f'class number {i}' for i in range(classes)]
    model.set_vocabulary(vocabulary)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    if mode == 'whole-native':  # CLIP at the image's size, not resized to img_size
        mode = 'whole'
        model.resize_to_backbone = False
    with torch.no_grad():  # warm-up: text features, allocator, lazy imports
        if mode != 'demo':
            model.test_cfg['mode'] = mode
        small = np.ascontiguousarray(image[:min(height, 400), :min(width, 400)])
        inference_model(model, small, vocabulary)
    estimate = estimate_inference_memory(model, (height, width), classes,
                                         mode=None if mode == 'demo' else mode)
    before = _status('VmRSS')
    _reset_peak()
    start = time.perf_counter()
    note, drawing = '', None
    if mode == 'demo':
        run_image, note = fit_inference_to_memory(model, image, classes, budget)
        result = restore_prediction_size(inference_model(model, run_image, vocabulary),
                                         (height, width))
        peak_before_drawing = _status('VmHWM')
        drawing_from = _status('VmRSS')
        _reset_peak()
        with_labels, drawing_note = fit_drawing_to_memory(result, classes, True, budget)
        note = '; '.join(n for n in (note, drawing_note) if n)
        with tempfile.TemporaryDirectory() as tmp:
            show_result(image, result, vocabulary, with_labels=with_labels,
                        out_file=osp.join(tmp, 'demo.png'))
        estimate = None
        drawing = _status('VmHWM') - drawing_from
        total = max(_status('VmHWM'), peak_before_drawing)
    else:
        with torch.no_grad():
            inference_model(model, image, vocabulary)
        total = _status('VmHWM')
    seconds = time.perf_counter() - start
    if not getattr(model, 'resize_to_backbone', True):
        mode = 'whole (CLIP at image size)'
    return dict(arch=arch, point=point, mode=mode, height=height, width=width,
                classes=classes, rss_before=before, rss_peak=total - before,
                process_peak=total, seconds=seconds, note=note,
                drawing_bytes_per_pixel=None if drawing is None else drawing / (height * width),
                estimate=None if estimate is None else estimate.total,
                stage=None if estimate is None else estimate.largest_stage)


def render(rows, args) -> str:
    gib = 1024**3
    load = subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()
    lines = [
        '# Inference memory: estimate vs measurement', '',
        'Generated by `python tools/analysis/inference_memory.py '
        + ' '.join(sys.argv[1:]) + '`.', '',
        f'Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch threads '
        f'{args.threads}, Python {platform.python_version()}; after the run: `{load}`.', '',
        f'Model: `{ARCHS[args.arch]}` ({args.arch}) with random weights, fp32, CPU. '
        '"RSS peak" is the rise of the resident high-water mark over the resident size '
        'before the call; "estimate" is `mmseg_hclip.utils.memory.estimate_inference_memory` '
        '(its largest stage in brackets). Demo rows run the demo path '
        '(`fit_inference_to_memory` with `--memory-budget '
        f'{args.budget}`, inference, overlay drawing); "process peak" includes the weights.',
        '', '| mode | image HxW | classes | estimate GiB | RSS peak GiB | ratio | '
        'process peak GiB | time s |', '|---|---|---|---|---|---|---|---|'
    ]
    for r in rows:
        est = r['estimate']
        stage = r['stage']
        lines.append(
            f"| {r['mode']} | {r['height']}x{r['width']} | {r['classes']} | "
            + (f"{est / gib:.2f} ({stage})" if est else '-') + ' | '
            + f"{r['rss_peak'] / gib:.2f} | "
            + (f"{est / max(r['rss_peak'], 1):.2f}" if est else '-')
            + f" | {r['process_peak'] / gib:.2f} | {r['seconds']:.1f} |")
    demos = [r for r in rows if r['mode'] == 'demo']
    if demos:
        lines += ['', 'Demo rows: the note printed, and the rise of the resident high-water '
                  'mark while drawing and saving the overlay, per image pixel:', '']
        lines += [f"- {r['height']}x{r['width']}, {r['classes']} classes: "
                  f"{r['note'] or '(config mode kept, nothing printed)'}; drawing "
                  f"{r['drawing_bytes_per_pixel']:.0f} bytes/pixel" for r in demos]
    return '\n'.join(lines) + '\n'


def main(argv=None):
    args = parse_args(argv)
    if args.point:
        import torch
        torch.set_num_threads(args.threads)
        print(json.dumps(run_point(args.arch, args.point, args.budget)))
        return
    rows = []
    for point in args.points:
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        proc = subprocess.run([sys.executable, osp.abspath(__file__), '--arch', args.arch,
                               '--point', point, '--threads', str(args.threads), '--budget',
                               str(args.budget)], capture_output=True, text=True, env=env)
        if proc.returncode:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f'point {point} failed')
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        print(row, flush=True)
        rows.append(row)
    text = render(rows, args)
    with open(args.out, 'w') as f:
        f.write(text)
    print(text)


if __name__ == '__main__':
    main()
