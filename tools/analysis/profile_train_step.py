"""Forward/backward time of one H-CLIP ViT-B/16 training step on CPU and its split.

Random weights (pretrained=None), batch 1; by default the reference setting: 384x384 input,
171 classes (COCO-Stuff), the reference head (class aggregation padded to 256 classes).
Split: text tower (neck: one prompt per class through the tuned text tower, incl. adapter
weights), image tower (dense forward), head (cost aggregation + BCE loss); each measured alone as
forward+backward, and the whole step (segmentor.loss + backward) measured together.

    python tools/analysis/profile_train_step.py [--repeats 3] [--threads N] \
        [--img-size 384] [--classes 171] [--pad-len 256] [--out docs/profile_train_step.md]

Each part runs ``--warmup`` untimed times, then ``--repeats`` timed times in interleaved
rounds (step, text, image, head, adapter; then rotated), so that a busy machine slows every part
alike; the median is reported (``--sequential``: each part's runs back to back instead).
"""
import argparse
import json
import os
import os.path as osp
import platform
import statistics
import sys
import time

import torch
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

import mmseg_hclip  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.abspath(mmseg_hclip.__file__)))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from benchmark_peft import interleaved_times  # noqa: E402


def timed(fn, repeats, warmup=1):
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def class_names(n):
    """``n`` class names: COCO-Stuff's 171, cycled with a suffix when more are asked for."""
    coco = json.load(open(osp.join(ROOT, 'mmseg_hclip/data/classnames/coco.json')))
    return [coco[i % len(coco)] + ('' if i < len(coco) else f' {i // len(coco)}')
            for i in range(n)]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=osp.join(ROOT, 'configs/_base_/models/hclip_vitb16.py'))
    parser.add_argument('--img-size', type=int, default=None,
                        help='input side (default: the config\'s backbone img_size, 384)')
    parser.add_argument('--classes', type=int, default=171, help='vocabulary size')
    parser.add_argument('--pad-len', type=int, default=None,
                        help='head pad_len (default: the config\'s, 256)')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads')
    parser.add_argument('--sequential', action='store_true',
                        help='time each part\'s runs back to back (default: interleaved rounds)')
    parser.add_argument('--out', default=None, help='also write the report as markdown here')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(args.config)
    cfg.model.backbone.pretrained = None
    if args.img_size:
        cfg.model.backbone.img_size = args.img_size
        grid = args.img_size // 16
        cfg.model.decode_head.feature_size = (grid, grid)
        cfg.model.decode_head.window_size = min(cfg.model.decode_head.window_size, grid // 2)
    if args.pad_len is not None:
        cfg.model.decode_head.pad_len = args.pad_len
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    model.set_vocabulary(class_names(args.classes))
    n = args.classes
    size = tuple(cfg.model.backbone.img_size for _ in range(2))
    inputs = torch.randn(1, 3, *size)
    sample = SegDataSample(gt_sem_seg=PixelData(data=torch.randint(0, n, (1, *size))))
    sample.set_metainfo(dict(img_shape=size, pad_shape=size, ori_shape=size))
    bb, neck, head = model.backbone, model.neck, model.decode_head

    def zero():
        model.zero_grad(set_to_none=True)

    def step():
        zero()
        losses = model.loss(inputs, [sample])
        sum(v for k, v in losses.items() if 'loss' in k).backward()

    def text():
        zero()
        emb = neck(bb, model.vocabulary, bb.adapted_weights())
        emb.sum().backward()

    def image():
        zero()
        out = bb(inputs, bb.adapted_weights())
        (out['dense'].sum() + sum(g.sum() for g in out['guidance'])).backward()

    with torch.no_grad():
        feats = model.extract_feat(inputs)
    feats = {k: (v.detach().requires_grad_() if torch.is_tensor(v) else
                 [g.detach().requires_grad_() for g in v]) for k, v in feats.items()}

    def head_only():
        zero()
        losses = head.loss(feats, [sample], model.train_cfg)
        sum(v for k, v in losses.items() if 'loss' in k).backward()

    def adapter_only():
        zero()
        w = bb.adapter(bb.clip)
        sum(v.sum() for v in w.values()).backward()

    load_before = os.getloadavg()
    parts = dict(step=step, text_tower=text, image_tower=image, head=head_only,
                 adapter_weights=adapter_only)
    if args.sequential:
        times = {}
        for name, fn in parts.items():
            print(f'timing {name} ...', file=sys.stderr, flush=True)
            times[name] = timed(fn, args.repeats, args.warmup)
    else:
        print(f'timing {len(parts)} parts x {args.repeats} interleaved rounds ...',
              file=sys.stderr, flush=True)
        times = interleaved_times(parts, args.repeats, args.warmup, 'cpu')
    load_after = os.getloadavg()
    res = {k: statistics.median(v) for k, v in times.items()}
    command = 'python ' + ' '.join([osp.relpath(__file__, ROOT)] +
                                   (argv if argv is not None else sys.argv[1:]))
    head_cfg = cfg.model.decode_head
    settings = dict(
        config=osp.relpath(args.config, ROOT),
        arch=(cfg.model.backbone.arch if isinstance(cfg.model.backbone.arch, str) else 'inline'),
        input=size,
        classes=n, pad_len=head_cfg.pad_len, window_size=head_cfg.window_size,
        threads=torch.get_num_threads(), warmup=args.warmup, repeats=args.repeats,
        order='one after another' if args.sequential else 'in interleaved rounds',
        load_before=load_before, load_after=load_after, cpus=os.cpu_count(),
        torch=torch.__version__)
    report = render(command, settings, times, res)
    print(report)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(report)
    return settings, times


def render(command, s, times, res):
    lines = [
        '# Profile: one H-CLIP training step on CPU', '',
        f'Produced by `{command}` (numbers below are from that one run).', '',
        f"- model: `{s['config']}`, arch {s['arch']} (random weights), batch 1, input "
        f"{s['input'][0]}×{s['input'][1]}, {s['classes']} classes (one prompt each), head "
        f"pad_len {s['pad_len']}, window {s['window_size']}",
        f"- CPU: {s['cpus']} cores, torch {s['torch']}, {s['threads']} intra-op thread(s); "
        f"load average (1/5/15 min) before {'/'.join(f'{x:.2f}' for x in s['load_before'])}, "
        f"after {'/'.join(f'{x:.2f}' for x in s['load_after'])}",
        f"- {s['warmup']} untimed + {s['repeats']} timed run(s) per part, median reported; "
        f"parts timed {s['order']}", '',
        '| part (forward + backward) | median (s) | all runs (s) | share of the step |',
        '| --- | ---: | --- | ---: |'
    ]
    for k, v in res.items():
        lines.append(f"| {k} | {v:.2f} | {', '.join(f'{t:.2f}' for t in times[k])} | "
                     f"{100 * v / res['step']:.1f}% |")
    rest = res['step'] - res['text_tower'] - res['image_tower'] - res['head']
    lines += [
        '', f'Step minus (text + image + head): {rest:.2f} s '
        f"({100 * rest / res['step']:.1f}%; the parts are timed alone, so each includes its own "
        'adapter-weight computation and the sum can exceed the step).', '',
        'text_tower and image_tower include computing the adapted weights (adapter forward and '
        'backward) once each; adapter_weights is that part alone. head = cost aggregation + '
        'decoder + BCE loss on detached features.', ''
    ]
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
