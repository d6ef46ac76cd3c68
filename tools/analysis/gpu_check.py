"""Training throughput of H-CLIP ViT-B/16 on one GPU: fp32 and bf16, ours and the authors' recipe.

Random weights (no download), 384x384 inputs, 171 classes (COCO-Stuff names), batch 4, random
labels; a few real training steps (forward, BCE loss, backward, the config's optimizer with its
parameter-wise learning rates and gradient clipping) per setting:

* ``paper``: ``configs/hclip_vitb16_coco-stuff.py`` (our defaults: Adam, fp32 matmuls);
* ``authors``: ``configs/hclip_vitb16_coco-stuff_official.py`` (the authors' released recipe:
  official-compat adapter, AdamW, clipping 0.01, ``float32_matmul_precision('high')`` = TF32);

each in fp32 and under bf16 autocast (weights, optimizer and loss stay fp32), with the head's
``impl`` ``fast`` (default) and ``reference``. Reported per run: images/s, step time, peak
memory, the split of a step (text tower, image tower, head - each forward + backward alone -
and the optimizer step), and bf16 vs fp32 logit / loss differences.

    python tools/analysis/gpu_check.py --out docs/gpu_check.md          # on a GPU
    python tools/analysis/gpu_check.py --device cpu --steps 1 --tiny     # dry run on a CPU

``--tiny`` swaps in the tiny inline CLIP (96x96, 5 classes, batch 2) so that the whole script
runs in a minute on a CPU. ``tools/analysis/gpu_check.sh`` prepares a bare GPU machine (mmcv
built with CPU ops only) and runs this script.
"""
import argparse
import contextlib
import copy
import json
import os
import os.path as osp
import platform
import statistics
import sys
import time

import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

import mmseg_hclip  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.abspath(mmseg_hclip.__file__)))
THIS = osp.abspath(__file__)  # before anything can change the working directory
SETTINGS = {
    'paper': 'configs/hclip_vitb16_coco-stuff.py',
    'authors': 'configs/hclip_vitb16_coco-stuff_official.py',
}
TINY_MODEL = 'configs/_base_/models/hclip_tiny.py'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda', help="'cuda' (default) or 'cpu'")
    parser.add_argument('--settings', nargs='+', default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument('--precisions', nargs='+', default=['fp32', 'bf16'],
                        choices=['fp32', 'bf16'])
    parser.add_argument('--impls', nargs='+', default=['fast', 'reference'],
                        choices=['fast', 'reference'], help='head impls')
    parser.add_argument('--batch', type=int, default=None, help='images per step (default 4)')
    parser.add_argument('--classes', type=int, default=None, help='vocabulary size (171)')
    parser.add_argument('--steps', type=int, default=5, help='timed steps per run')
    parser.add_argument('--warmup', type=int, default=2, help='untimed steps per run')
    parser.add_argument('--tiny', action='store_true',
                        help='tiny inline CLIP (dry run of the script on a CPU)')
    parser.add_argument('--out', default=None, help='also write the report (markdown) here')
    parser.add_argument('--json', default=None, help='also write the raw numbers here')
    return parser.parse_args(argv)


def class_names(n):
    coco = json.load(open(osp.join(ROOT, 'mmseg_hclip/data/classnames/coco.json')))
    return [coco[i % len(coco)] + ('' if i < len(coco) else f' {i // len(coco)}')
            for i in range(n)]


def sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def autocast(device, precision):
    if precision == 'bf16':
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_setting(name, args):
    """The setting's config with random weights (and the tiny model with ``--tiny``)."""
    cfg = Config.fromfile(osp.join(ROOT, SETTINGS[name]))
    cfg.model.backbone.pretrained = None
    if args.tiny:
        tiny = Config.fromfile(osp.join(ROOT, TINY_MODEL)).model
        adapter = dict(cfg.model.backbone.get('adapter', {}))
        cfg.model = tiny
        # keep the setting's adapter variant (official-compat or paper) at the tiny size
        adapter.update(block_size=tiny.backbone.adapter.block_size)
        cfg.model.backbone.adapter = adapter
    precision = 'highest'
    for hook in cfg.get('custom_hooks', []):
        if hook.get('type') == 'Float32MatmulPrecisionHook':
            precision = hook.get('precision', 'high')
    return cfg, precision


def make_batch(cfg, batch, classes, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    side = cfg.model.backbone.img_size
    size = (side, side)
    inputs = torch.randn(batch, 3, *size, generator=g).to(device)
    samples = []
    for _ in range(batch):
        s = SegDataSample(gt_sem_seg=PixelData(
            data=torch.randint(0, classes, (1, *size), generator=g).to(device)))
        s.set_metainfo(dict(img_shape=size, pad_shape=size, ori_shape=size))
        samples.append(s)
    return inputs, samples


def timed(fn, n, device):
    times = []
    for _ in range(n):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def peak_step_memory(fn, device):
    """Peak bytes allocated during ``fn()`` above what was allocated before, and the peak
    itself (CUDA: allocator statistics; CPU: the profiler's allocator events)."""
    if device.type == 'cuda':
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device)
        return peak - base, peak
    sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
    from benchmark_peft import peak_memory
    return peak_memory(fn, 'cpu'), None


def run_one(model, optim_wrapper, inputs, samples, device, precision, impl, args):
    """Steps and split of one (setting, precision, impl)."""
    model.decode_head.impl = impl
    bb, neck, head = model.backbone, model.neck, model.decode_head

    def step():
        with autocast(device, precision):
            losses = model.loss(inputs, samples)
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        optim_wrapper.update_params(loss)  # backward, clip, optimizer step, zero_grad

    for _ in range(args.warmup):
        step()
    step_times = timed(step, args.steps, device)
    peak, peak_abs = peak_step_memory(step, device)

    # split: each part forward + backward alone, and the optimizer step alone
    def text():
        with autocast(device, precision):
            emb = neck(bb, model.vocabulary, bb.adapted_weights())
        emb.float().sum().backward()

    def image():
        with autocast(device, precision):
            out = bb(inputs, bb.adapted_weights())
        (out['dense'].float().sum() + sum(g.float().sum() for g in out['guidance'])).backward()

    with torch.no_grad(), autocast(device, precision):
        feats = model.extract_feat(inputs)
    feats = {k: (v.detach().requires_grad_() if torch.is_tensor(v) else
                 [g.detach().requires_grad_() for g in v]) for k, v in feats.items()}

    def head_part():
        with autocast(device, precision):
            losses = head.loss(feats, samples, model.train_cfg)
        sum(v for k, v in losses.items() if 'loss' in k).backward()

    def optimizer_part():
        optim_wrapper.step()

    split = {}
    n_split = max(1, min(3, args.steps))
    for name, fn in (('text_tower', text), ('image_tower', image), ('head', head_part)):
        optim_wrapper.zero_grad()
        fn()  # warm
        optim_wrapper.zero_grad()
        split[name] = statistics.median(timed(fn, n_split, device))
    optim_wrapper.zero_grad()
    text()
    image()
    head_part()  # gradients everywhere, so the optimizer step does its full work
    split['optimizer'] = statistics.median(timed(optimizer_part, n_split, device))
    optim_wrapper.zero_grad()
    step_time = statistics.median(step_times)
    return dict(step_times=step_times, step=step_time, images_per_s=inputs.shape[0] / step_time,
                peak_bytes=peak, peak_abs_bytes=peak_abs, split=split)


def bf16_vs_fp32(model, inputs, samples, device):
    """Logits and loss of one training-mode forward in fp32 and under bf16 autocast."""
    head = model.decode_head
    out = {}
    with torch.no_grad():
        res = {}
        for precision in ('fp32', 'bf16'):
            with autocast(device, precision):
                feats = model.extract_feat(inputs)
                logits = head(feats).float()
                losses = head.loss_by_feat(logits, samples)
            res[precision] = (logits, sum(v for k, v in losses.items() if 'loss' in k).float())
    (l32, loss32), (l16, loss16) = res['fp32'], res['bf16']
    out['logits_rel_l2'] = ((l16 - l32).norm() / l32.norm()).item()
    out['logits_max_abs'] = (l16 - l32).abs().max().item()
    out['loss_fp32'], out['loss_bf16'] = loss32.item(), loss16.item()
    out['loss_rel'] = abs(out['loss_bf16'] - out['loss_fp32']) / abs(out['loss_fp32'])
    return out


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('no CUDA device: use --device cpu (add --tiny for a quick dry run)')
    batch = args.batch or (2 if args.tiny else 4)
    classes = args.classes or (5 if args.tiny else 171)
    register_all_modules(init_default_scope=True)
    results, accuracy, meta = {}, {}, {}
    default_precision = torch.get_float32_matmul_precision()
    try:
        for setting in args.settings:
            cfg, matmul_precision = load_setting(setting, args)
            torch.set_float32_matmul_precision(matmul_precision)
            torch.manual_seed(0)
            base = MODELS.build(cfg.model)
            base.init_weights()
            base.set_vocabulary(class_names(classes))
            base.to(device).train()
            inputs, samples = make_batch(cfg, batch, classes, device)
            meta[setting] = dict(config=SETTINGS[setting], matmul_precision=matmul_precision,
                                 optimizer=cfg.optim_wrapper.optimizer.type,
                                 clip_grad=cfg.optim_wrapper.get('clip_grad'),
                                 input=cfg.model.backbone.img_size)
            for precision in args.precisions:
                for impl in args.impls:
                    print(f'{setting} {precision} {impl} ...', file=sys.stderr, flush=True)
                    model = copy.deepcopy(base)
                    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
                    optim_cfg.type = 'OptimWrapper'  # autocast is applied here (bf16: no scaler)
                    optim_wrapper = build_optim_wrapper(model, optim_cfg)
                    results[(setting, precision, impl)] = run_one(
                        model, optim_wrapper, inputs, samples, device, precision, impl, args)
                    del model, optim_wrapper
                    if device.type == 'cuda':
                        torch.cuda.empty_cache()
            if 'bf16' in args.precisions:
                accuracy[setting] = bf16_vs_fp32(base, inputs, samples, device)
            del base
    finally:
        torch.set_float32_matmul_precision(default_precision)
    env = dict(device=(torch.cuda.get_device_name(device) if device.type == 'cuda' else
                       platform.processor() or 'CPU'),
               torch=torch.__version__, cuda=torch.version.cuda, python=platform.python_version(),
               batch=batch, classes=classes, steps=args.steps, warmup=args.warmup, tiny=args.tiny,
               load=os.getloadavg(), threads=torch.get_num_threads())
    command = 'python ' + ' '.join([osp.relpath(THIS, ROOT)] +
                                   (argv if argv is not None else sys.argv[1:]))
    report = render(command, env, meta, results, accuracy)
    print(report)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            f.write(report)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(env=env, meta=meta, accuracy=accuracy,
                           results={' / '.join(k): v for k, v in results.items()}), f, indent=1)
    return dict(env=env, meta=meta, results=results, accuracy=accuracy)


def _mib(value):
    return '-' if value is None else f'{value / 2**20:.0f}'


def render(command, env, meta, results, accuracy):
    lines = [
        '# GPU check: H-CLIP training throughput', '',
        f'Produced by `{command}`.', '',
        f"- device: {env['device']}; torch {env['torch']} (CUDA {env['cuda']}), Python "
        f"{env['python']}; load average {'/'.join(f'{x:.2f}' for x in env['load'])}",
        f"- {'tiny inline CLIP (dry run)' if env['tiny'] else 'ViT-B/16, random weights'}, "
        f"batch {env['batch']}, {env['classes']} classes, random labels; "
        f"{env['warmup']} untimed + {env['steps']} timed steps per row (median)", '']
    for setting, m in meta.items():
        lines.append(f"- {setting}: `{m['config']}` ({m['optimizer']}, clip_grad "
                     f"{m['clip_grad']}, float32 matmul precision '{m['matmul_precision']}', "
                     f"input {m['input']}²)")
    lines += ['', '| setting | precision | head impl | images/s | step (s) | peak memory above '
              'model (MiB) | peak allocated (MiB) | text tower | image tower | head | '
              'optimizer |', '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | '
              '---: | ---: |']
    for (setting, precision, impl), r in results.items():
        s = r['split']
        lines.append(
            f"| {setting} | {precision} | {impl} | {r['images_per_s']:.2f} | {r['step']:.3f} | "
            f"{_mib(r['peak_bytes'])} | {_mib(r['peak_abs_bytes'])} | {s['text_tower']:.3f} | "
            f"{s['image_tower']:.3f} | {s['head']:.3f} | {s['optimizer']:.3f} |")
    lines += ['', 'Split columns: seconds, each part forward + backward alone (text tower incl. '
              'the adapter weights; head = cost aggregation + decoder + loss on detached '
              'features) and the optimizer step alone (clipping included).']
    if accuracy:
        lines += ['', '## bf16 autocast vs fp32 (same weights and batch, training mode)', '',
                  '| setting | logits rel. L2 | logits max abs | loss fp32 | loss bf16 | '
                  'loss rel. |', '| --- | ---: | ---: | ---: | ---: | ---: |']
        for setting, a in accuracy.items():
            lines.append(f"| {setting} | {a['logits_rel_l2']:.2e} | {a['logits_max_abs']:.3f} | "
                         f"{a['loss_fp32']:.5f} | {a['loss_bf16']:.5f} | {a['loss_rel']:.2e} |")
    lines.append('')
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
