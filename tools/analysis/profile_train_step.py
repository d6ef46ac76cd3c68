"""Time, memory and operator profile of one H-CLIP ViT-B/16 training step on CPU.

Random weights (pretrained=None), batch 1; by default the reference setting: 384x384 input,
171 classes (COCO-Stuff), the reference head (class aggregation padded to 256 classes).

A *setup* is a head ``impl`` (``fast``, the default, or ``reference``, CAT-Seg's order of
operations) and a CPU allocator mode (``keep``: freed memory reused, the default of our
configs' ``CPUAllocatorHook``; ``default``: glibc's, large blocks mapped and page-faulted in
again; :mod:`mmseg_hclip.utils.cpu_allocator`), written ``impl:allocator``. The default setups
``fast:keep fast:default reference:default`` give the current path, the current head without
the allocator setting, and the path before both, in the same interleaved rounds: each round
runs every allocator mode's parts together, switched outside the timing (``default`` first
hands the heap back, so that its large blocks are mapped afresh as under glibc's own
settings; ``keep`` regrows its heap with one untimed step).

Parts, each forward + backward unless named otherwise:

* ``step[impl, allocator]``: the whole training step (``segmentor.loss`` + backward);
* ``text_tower[allocator]``: one prompt per class through the tuned text tower (incl.
  adapter weights);
* ``image_tower[allocator]``: the dense image forward (incl. adapter weights);
* ``head[impl, allocator]``: cost aggregation + decoder + BCE loss on detached features;
* ``head_inference[impl, allocator]``: the head's eval forward alone (no gradient; 1x1 class
  pooling), as in inference with cached text embeddings;
* ``adapter_weights[allocator]``: the adapter's weights alone;
* with ``--bf16``: ``step``, towers and head again under CPU autocast (bfloat16) with the
  first setup, and the logit/loss differences of that path against fp32.

    python tools/analysis/profile_train_step.py [--repeats 3] [--threads N] \\
        [--img-size 384] [--classes 171] [--pad-len 256] \\
        [--setups fast:keep fast:default reference:default] \\
        [--bf16] [--ops 25] [--out docs/profile_train_step.md]

Each part runs ``--warmup`` untimed times, then ``--repeats`` timed times in interleaved
rounds (rotated order), so that a busy machine slows every part alike; the median is
reported, with the 1-minute load average read at the start of each of the part's runs.
Peak memory: live tensor bytes during one step, from the profiler's allocator events.
``--ops N``: the N most expensive operators of the head (forward + backward) per impl.
"""
import argparse
import contextlib
import gc
import json
import os
import os.path as osp
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
from mmseg_hclip.utils.cpu_allocator import ALLOCATOR_MODES, set_cpu_allocator

ROOT = osp.dirname(osp.dirname(osp.abspath(mmseg_hclip.__file__)))
THIS = osp.abspath(__file__)  # before anything can change the working directory
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from benchmark_peft import _cpu_name, peak_memory, write_report  # noqa: E402


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


def parse_setup(text):
    """``'fast:keep'`` → ``('fast', 'keep')``; the allocator defaults to ``keep``."""
    impl, _, alloc = text.partition(':')
    alloc = alloc or 'keep'
    if impl not in ('fast', 'reference') or alloc not in ALLOCATOR_MODES:
        raise argparse.ArgumentTypeError(
            f'setup {text!r}: write impl:allocator with impl fast | reference and allocator '
            f'{" | ".join(ALLOCATOR_MODES)}, e.g. fast:keep')
    return impl, alloc


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=osp.join(ROOT, 'configs/_base_/models/hclip_vitb16.py'))
    parser.add_argument('--img-size', type=int, default=None,
                        help='input side (default: the config\'s backbone img_size, 384)')
    parser.add_argument('--classes', type=int, default=171, help='vocabulary size')
    parser.add_argument('--pad-len', type=int, default=None,
                        help='head pad_len (default: the config\'s, 256)')
    parser.add_argument('--setups', nargs='+', type=parse_setup,
                        default=[('fast', 'keep'), ('fast', 'default'), ('reference', 'default')],
                        help='impl:allocator pairs to time (impl: fast | reference; allocator: '
                        'keep | default); the last one is the baseline of the ratios')
    parser.add_argument('--bf16', action='store_true',
                        help='also time the bfloat16 autocast path and report its accuracy')
    parser.add_argument('--no-memory', action='store_true', help='skip the peak-memory pass')
    parser.add_argument('--ops', type=int, default=0,
                        help='also profile the head by operator: the N most expensive ops')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads')
    parser.add_argument('--sequential', action='store_true',
                        help='time each part\'s runs back to back (default: interleaved rounds)')
    parser.add_argument('--out', default=None, help='also write the report as markdown here')
    return parser.parse_args(argv)


def bf16_autocast(enabled=True):
    return torch.autocast('cpu', dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


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
    has_impl = hasattr(head, 'impl')
    setups = list(dict.fromkeys(args.setups if has_impl else
                                [('(single)', a) for _, a in args.setups]))
    impls = list(dict.fromkeys(impl for impl, _ in setups))
    allocs = list(dict.fromkeys(alloc for _, alloc in setups))

    def zero():
        model.zero_grad(set_to_none=True)

    def use(impl):
        if has_impl:
            head.impl = impl

    def step_fn(impl, bf16=False):
        def step():
            use(impl)
            with bf16_autocast(bf16):
                losses = model.loss(inputs, [sample])
            sum(v for k, v in losses.items() if 'loss' in k).backward()
        step.zero_grad = zero
        return step

    def text_fn(bf16=False):
        def text():
            with bf16_autocast(bf16):
                emb = neck(bb, model.vocabulary, bb.adapted_weights())
            emb.float().sum().backward()
        text.zero_grad = zero
        return text

    def image_fn(bf16=False):
        def image():
            with bf16_autocast(bf16):
                out = bb(inputs, bb.adapted_weights())
            (out['dense'].float().sum() + sum(g.float().sum() for g in out['guidance'])).backward()
        image.zero_grad = zero
        return image

    with torch.no_grad():
        feats = model.extract_feat(inputs)
    feats = {k: (v.detach().requires_grad_() if torch.is_tensor(v) else
                 [g.detach().requires_grad_() for g in v]) for k, v in feats.items()}

    def head_fn(impl, bf16=False):
        def head_only():
            use(impl)
            with bf16_autocast(bf16):
                losses = head.loss(feats, [sample], model.train_cfg)
            sum(v for k, v in losses.items() if 'loss' in k).backward()
        head_only.zero_grad = zero
        return head_only

    def infer_fn(impl, bf16=False):
        def head_inference():
            use(impl)
            head.eval()
            try:
                with torch.no_grad(), bf16_autocast(bf16):
                    head(feats)
            finally:
                head.train()
        return head_inference

    def adapter_only():
        w = bb.adapter(bb.clip)
        sum(v.sum() for v in w.values()).backward()
    adapter_only.zero_grad = zero

    parts, alloc_of = {}, {}  # name -> fn, name -> the allocator mode it runs under

    def add(name, alloc, fn):
        parts[name], alloc_of[name] = fn, alloc

    for impl, alloc in setups:
        add(f'step[{impl}, {alloc}]', alloc, step_fn(impl))
    for alloc in allocs:
        add(f'text_tower[{alloc}]', alloc, text_fn())
        add(f'image_tower[{alloc}]', alloc, image_fn())
    for impl, alloc in setups:
        add(f'head[{impl}, {alloc}]', alloc, head_fn(impl))
    for impl, alloc in setups:
        add(f'head_inference[{impl}, {alloc}]', alloc, infer_fn(impl))
    add(f'adapter_weights[{allocs[0]}]', allocs[0], adapter_only)
    if args.bf16:
        impl, alloc = setups[0]
        add(f'step[{impl}, {alloc}, bf16]', alloc, step_fn(impl, True))
        add(f'text_tower[{alloc}, bf16]', alloc, text_fn(True))
        add(f'image_tower[{alloc}, bf16]', alloc, image_fn(True))
        add(f'head[{impl}, {alloc}, bf16]', alloc, head_fn(impl, True))
        add(f'head_inference[{impl}, {alloc}, bf16]', alloc, infer_fn(impl, True))

    impl, alloc = setups[0]
    warm = step_fn(impl)  # grows the heap that the 'keep' parts reuse (untimed)

    # the 1-minute load average at the start of every timed run of every part
    loads = {name: [] for name in parts}

    def with_load(name, fn):
        def run():
            loads[name].append(os.getloadavg()[0])
            fn()
        run.zero_grad = getattr(fn, 'zero_grad', lambda: None)
        return run

    load_before = os.getloadavg()
    if args.sequential:
        times = {}
        for name, fn in parts.items():
            print(f'timing {name} ...', file=sys.stderr, flush=True)
            switch_allocator(alloc_of[name], warm)
            times[name] = timed(with_load(name, fn), args.repeats, args.warmup)
    else:
        print(f'timing {len(parts)} parts x {args.repeats} interleaved rounds ...',
              file=sys.stderr, flush=True)
        times = allocator_rounds({k: with_load(k, f) for k, f in parts.items()}, alloc_of,
                                 args.repeats, args.warmup, warm)
    for name in loads:  # drop the warm-up runs' readings
        loads[name] = loads[name][len(loads[name]) - len(times[name]):]
    memory = {}
    if not args.no_memory:
        # live tensor bytes do not depend on the allocator: one pass per impl
        for impl in impls:
            alloc = next(a for i, a in setups if i == impl)
            print(f'peak memory of step[{impl}] ...', file=sys.stderr, flush=True)
            memory[f'step[{impl}]'] = (peak_memory(parts[f'step[{impl}, {alloc}]'], 'cpu'),
                                       os.getloadavg()[0])
        if args.bf16:
            impl, alloc = setups[0]
            memory[f'step[{impl}, bf16]'] = (
                peak_memory(parts[f'step[{impl}, {alloc}, bf16]'], 'cpu'), os.getloadavg()[0])
    accuracy = bf16_accuracy(model, inputs, sample) if args.bf16 else None
    ops = {}
    if args.ops:
        for impl, alloc in setups:
            name = f'{impl}, {alloc}'
            print(f'operator profile of head[{name}] ...', file=sys.stderr, flush=True)
            switch_allocator(alloc, warm)
            ops[name] = op_table(head_fn(impl), args.ops)
    use(impls[0])
    set_cpu_allocator('default')  # glibc's behaviour again (this may run inside tests)
    load_after = os.getloadavg()
    res = {k: statistics.median(v) for k, v in times.items()}
    command = 'python ' + ' '.join([osp.relpath(THIS, ROOT)] +
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
        cpu=_cpu_name() or 'unknown CPU', torch=torch.__version__, setups=setups)
    report = render(command, settings, times, res, loads, memory, accuracy, ops)
    write_report(report, args.out)
    return dict(settings=settings, times=times, loads=loads, memory=memory,
                accuracy=accuracy, ops=ops)


def switch_allocator(mode, warm):
    """Set the allocator mode. ``default`` hands the free heap back to the kernel, so that
    large blocks are mapped afresh as under glibc's own settings (a grown heap would serve
    them); ``keep`` then grows the heap again with one untimed ``warm()`` (a whole step)."""
    set_cpu_allocator(mode)
    if mode == 'keep':
        getattr(warm, 'zero_grad', lambda: None)()
        warm()


def allocator_rounds(parts, alloc_of, repeats, warmup, warm):
    """Like ``benchmark_peft.interleaved_times``, with the allocator switched outside the
    timing: every round runs the modes in turn (rotating), each mode's parts once
    (rotating); the first ``warmup`` rounds are not timed."""
    modes = list(dict.fromkeys(alloc_of.values()))
    times = {name: [] for name in parts}
    for r in range(warmup + repeats):
        for mode in modes[r % len(modes):] + modes[:r % len(modes)]:
            switch_allocator(mode, warm)
            names = [n for n in parts if alloc_of[n] == mode]
            for name in names[r % len(names):] + names[:r % len(names)]:
                getattr(parts[name], 'zero_grad', lambda: None)()
                gc.collect()
                start = time.perf_counter()
                parts[name]()
                if r >= warmup:
                    times[name].append(time.perf_counter() - start)
    return times



def bf16_accuracy(model, inputs, sample):
    """Logits, scores and loss of one forward in fp32 and under bf16 autocast (same weights,
    same input; training mode as in a step, and eval-mode head logits)."""
    out = {}
    head = model.decode_head
    with torch.no_grad():
        results = {}
        for bf16 in (False, True):
            with bf16_autocast(bf16):
                feats = model.extract_feat(inputs)
                logits = head(feats).float()
                loss = head.loss_by_feat(logits, [sample])
                head.eval()
                try:
                    eval_logits = head(feats).float()
                finally:
                    head.train()
            results[bf16] = (logits, sum(v for k, v in loss.items() if 'loss' in k).float(),
                             eval_logits)
    (l32, loss32, e32), (l16, loss16, e16) = results[False], results[True]
    out['train_logits_rel_l2'] = ((l16 - l32).norm() / l32.norm()).item()
    out['train_logits_max_abs'] = (l16 - l32).abs().max().item()
    out['loss_fp32'] = loss32.item()
    out['loss_bf16'] = loss16.item()
    out['loss_rel'] = abs(loss16.item() - loss32.item()) / abs(loss32.item())
    out['eval_logits_rel_l2'] = ((e16 - e32).norm() / e32.norm()).item()
    out['eval_argmax_agreement'] = (e16.argmax(1) == e32.argmax(1)).float().mean().item()
    return out


def op_table(fn, rows):
    """The ``rows`` operators with the most self CPU time in one call of ``fn``."""
    from torch.profiler import ProfilerActivity, profile
    fn.zero_grad()
    fn()  # warm
    fn.zero_grad()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = [e for e in prof.key_averages() if not e.key.startswith('autograd::engine')]
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return dict(total_s=total / 1e6, rows=[(e.key, e.count, e.self_cpu_time_total / 1e6)
                                            for e in events[:rows]])


def _loads(values):
    return f"{statistics.mean(values):.1f}" if values else '-'


def render(command, s, times, res, loads, memory, accuracy, ops):
    lines = [
        '# Profile: one H-CLIP training step on CPU', '',
        f'Produced by `{command}` (numbers below are from that one run).', '',
        f"- model: `{s['config']}`, arch {s['arch']} (random weights), batch 1, input "
        f"{s['input'][0]}×{s['input'][1]}, {s['classes']} classes (one prompt each), head "
        f"pad_len {s['pad_len']}, window {s['window_size']}",
        f"- CPU: {s['cpu']}, {s['cpus']} cores, torch {s['torch']}, {s['threads']} intra-op "
        f"thread(s); load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.2f}' for x in s['load_before'])}, after "
        f"{'/'.join(f'{x:.2f}' for x in s['load_after'])}",
        f"- {s['warmup']} untimed + {s['repeats']} timed run(s) per part, median reported; "
        f"parts timed {s['order']}; load = mean 1-minute load average at the start of the "
        "part's timed runs", '',
        '| part (forward + backward) | median (s) | all runs (s) | load |',
        '| --- | ---: | --- | ---: |'
    ]
    for k, v in res.items():
        lines.append(f"| {k} | {v:.2f} | {', '.join(f'{t:.2f}' for t in times[k])} | "
                     f'{_loads(loads.get(k))} |')
    def towers(alloc, suffix=''):
        return res[f'text_tower[{alloc}{suffix}]'] + res[f'image_tower[{alloc}{suffix}]']

    setups = s['setups']
    lines += ['', '## Ratios (same run)', '']
    for impl, alloc in setups:
        name = f'{impl}, {alloc}'
        lines.append(f"- head[{name}] ÷ (text tower + image tower)[{alloc}]: "
                     f"{res[f'head[{name}]']:.2f} / {towers(alloc):.2f} = "
                     f"**{res[f'head[{name}]'] / towers(alloc):.2f}**")
    base = ', '.join(setups[-1])
    for impl, alloc in setups[:-1]:
        name = f'{impl}, {alloc}'
        lines.append(f'- [{name}] ÷ [{base}]: ' + ', '.join(
            f"{part} **{res[f'{part}[{name}]'] / res[f'{part}[{base}]']:.2f}**"
            for part in ('step', 'head', 'head_inference')) +
            f', towers {towers(alloc) / towers(setups[-1][1]):.2f}')
    impl, alloc = setups[0]
    name = f'{impl}, {alloc}'
    if f'step[{name}, bf16]' in res:
        lines.append(f"- bf16 autocast ÷ fp32 ({name}): step "
                     f"{res[f'step[{name}, bf16]'] / res[f'step[{name}]']:.2f}, head "
                     f"{res[f'head[{name}, bf16]'] / res[f'head[{name}]']:.2f}, head inference "
                     f"{res[f'head_inference[{name}, bf16]'] / res[f'head_inference[{name}]']:.2f}"
                     f", towers {towers(alloc, ', bf16') / towers(alloc):.2f}")
    if memory:
        lines += ['', '## Peak memory of one step', '',
                  '| step | peak live tensors (MiB) | load |', '| --- | ---: | ---: |']
        for k, (v, load) in memory.items():
            lines.append(f'| {k} | {v / 2**20:.0f} | {load:.1f} |')
        if 'step[fast]' in memory and 'step[reference]' in memory:
            lines.append('')
            ratio = memory['step[fast]'][0] / memory['step[reference]'][0]
            lines.append(f'fast ÷ reference: **{ratio:.2f}**')
    if accuracy:
        a = accuracy
        lines += [
            '', '## bf16 autocast vs fp32 (same weights and input)', '',
            f"- training-mode logits: relative L2 difference {a['train_logits_rel_l2']:.2e}, "
            f"max abs {a['train_logits_max_abs']:.3f}",
            f"- loss: fp32 {a['loss_fp32']:.6f}, bf16 {a['loss_bf16']:.6f} (relative "
            f"{a['loss_rel']:.2e})",
            f"- eval-mode logits: relative L2 difference {a['eval_logits_rel_l2']:.2e}; argmax "
            f"class equal at {100 * a['eval_argmax_agreement']:.2f}% of the pixels"]
    for impl, table in ops.items():
        lines += ['', f"## Operators of head[{impl}] (forward + backward, self CPU time; one "
                  f"run, {table['total_s']:.1f} s in all)", '',
                  '| operator | calls | self CPU (s) | share |', '| --- | ---: | ---: | ---: |']
        for key, count, secs in table['rows']:
            lines.append(f'| `{key}` | {count} | {secs:.2f} | '
                         f"{100 * secs / table['total_s']:.1f}% |")
    lines += [
        '', 'text_tower and image_tower include computing the adapted weights (adapter forward '
        'and backward) once each; adapter_weights is that part alone. head = cost aggregation '
        '+ decoder + BCE loss on detached features. Peak memory: the highest total of live '
        'tensor bytes during one step (profiler allocator events, op granularity).', ''
    ]
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
