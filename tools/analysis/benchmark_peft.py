"""Benchmark the H-CLIP adapter against plain fine-tuning of the same weights (issue 4).

Measures, in one run and on random weights (no download):

* training step (forward + backward) of an open_clip CLIP adapted with ``HCLIPAdapter``
  (transformed weights through ``torch.func.functional_call``) against the same model with
  ``attn.in_proj_weight`` and ``attn.out_proj.weight`` of both towers trainable and no adapter;
  one image and ``--prompts`` class prompts of 77 tokens, a CLIP-style cross-entropy loss;
* peak tensor memory of one such step (allocator events of ``torch.profiler``);
* no-grad inference (image + prompts) of the merged model against plain open_clip.

Steps of the compared setups are interleaved (A B C A B C ...) and the medians compared, so that
a busy machine slows all of them alike. Usage::

    python tools/analysis/benchmark_peft.py                       # writes docs/benchmark_peft.md
    python tools/analysis/benchmark_peft.py --repeats 5 --variants paper official pof-only
"""
import argparse
import copy
import gc
import json
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch.func import functional_call

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from mmseg_hclip.peft import OFFICIAL_COMPAT, HCLIPAdapter  # noqa: E402
from mmseg_hclip.peft.testing import perturb_adapter  # noqa: E402

VARIANTS = {
    'paper': dict(),  # POF (text orthogonal) + DCRC mlp, input side everywhere
    'official': dict(OFFICIAL_COMPAT),  # authors' released code: linear DCRC, out_proj B·W
    'pof-only': dict(dcrc='off'),
    'no-ortho': dict(orthogonal='none'),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', default='ViT-B-16', help='open_clip architecture name')
    parser.add_argument('--image-size', type=int, default=384)
    parser.add_argument('--prompts', type=int, default=32, help='class prompts (77 tokens)')
    parser.add_argument('--batch', type=int, default=1, help='images per step')
    parser.add_argument('--block-size', type=int, default=128)
    parser.add_argument('--variants', nargs='+', default=['paper'], choices=sorted(VARIANTS))
    parser.add_argument('--repeats', type=int, default=3, help='timed steps per setup')
    parser.add_argument('--warmup', type=int, default=1, help='untimed steps per setup')
    parser.add_argument('--infer-repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--no-memory', action='store_true', help='skip the profiler pass')
    parser.add_argument('--out', default='docs/benchmark_peft.md', help='markdown report')
    parser.add_argument('--json', default=None, help='also write the raw numbers here')
    return parser.parse_args(argv)


def build_clip(args):
    import open_clip
    torch.manual_seed(0)
    model = open_clip.create_model(
        args.model, pretrained=None, force_image_size=args.image_size, device=args.device)
    return model


def make_inputs(args, model):
    g = torch.Generator().manual_seed(0)
    image = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=g)
    tokens = torch.randint(1, model.vocab_size - 1, (args.prompts, model.context_length),
                           generator=g)
    tokens[:, -1] = model.vocab_size - 1  # an end-of-text token at the last position
    return image.to(args.device), tokens.to(args.device)


def clip_loss(image_features, text_features):
    logits = 100.0 * image_features @ text_features.t()  # [batch, prompts]
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def plain_setup(model, image, tokens) -> Callable[[], None]:
    """Plain fine-tuning: in_proj_weight and out_proj.weight of both towers trainable."""
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith(('attn.in_proj_weight', 'attn.out_proj.weight')))
        if param.requires_grad:
            trainable.append(param)
    model.train()

    def step():
        image_f, text_f, _ = model(image, tokens)
        clip_loss(image_f, text_f).backward()

    def zero_grad():
        for param in trainable:
            param.grad = None

    step.zero_grad = zero_grad
    step.num_trainable = sum(p.numel() for p in trainable)
    step.persistent = lambda: 0
    return step


def adapted_setup(model, adapter, image, tokens) -> Callable[[], None]:
    model.train()

    def step():
        weights = adapter(model)  # DCRC + Cayley + all transformed weights, once per step
        image_f, text_f, _ = functional_call(model, weights, (image, tokens), strict=False)
        clip_loss(image_f, text_f).backward()

    step.zero_grad = lambda: adapter.zero_grad(set_to_none=True)
    step.num_trainable = sum(p.numel() for p in adapter.parameters() if p.requires_grad)
    step.persistent = lambda: (sum(p.numel() * p.element_size() for p in adapter.parameters()) +
                               sum(t.numel() * t.element_size()
                                   for _, t in adapter._frozen_cache.values()))
    return step


def parametrisation_setup(model, adapter) -> Callable[[], None]:
    """The adapter alone: DCRC + Cayley + transformed weights, and their backward."""
    weights = adapter(model)
    grads = {name: torch.randn_like(w) for name, w in weights.items()}

    def step():
        weights = adapter(model)
        torch.autograd.backward(list(weights.values()), [grads[n] for n in weights])

    step.zero_grad = lambda: adapter.zero_grad(set_to_none=True)
    return step


def sync(device):
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def interleaved_times(fns: Dict[str, Callable], repeats: int, warmup: int,
                      device) -> Dict[str, List[float]]:
    """Run every fn ``warmup`` times, then ``repeats`` rounds in rotating order; wall seconds.

    A fn's ``zero_grad`` attribute, if any, is called before each run, outside the timing.
    """
    names = list(fns)
    zero = {name: getattr(fn, 'zero_grad', lambda: None) for name, fn in fns.items()}
    for _ in range(warmup):
        for name in names:
            zero[name]()
            fns[name]()
    sync(device)
    times = {name: [] for name in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            zero[name]()
            gc.collect()
            sync(device)
            start = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def write_report(report: str, out: Optional[str]) -> None:
    """Print ``report`` and, when ``out`` is given, write it there (UTF-8; folders made)."""
    print(report)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, 'w', encoding='utf-8') as f:
            f.write(report)


def peak_memory(fn: Callable, device) -> int:
    """Peak bytes of live tensors allocated during ``fn()`` (relative to its start).

    CUDA: exact (``max_memory_allocated``). CPU: from the profiler's allocation events at op
    granularity (an op's temporary buffers freed inside the same op are not seen).
    """
    getattr(fn, 'zero_grad', lambda: None)()
    gc.collect()
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # every allocation/free is attributed to the innermost op running it ('[memory]' events
    # outside ops): accumulate the ops' self memory in start-time order
    events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()
                    if e.self_cpu_memory_usage)
    live = peak = 0
    for _, delta in events:
        live += delta
        peak = max(peak, live)
    return peak


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = build_clip(args)
    image, tokens = make_inputs(args, base)
    plain_model = copy.deepcopy(base)
    steps = {'plain fine-tuning': plain_setup(plain_model, image, tokens)}
    adapters = {}
    for variant in args.variants:
        model = copy.deepcopy(base)
        adapter = HCLIPAdapter(model, block_size=args.block_size, **VARIANTS[variant])
        adapters[variant] = (model, adapter)
        steps[f'H-CLIP {variant}'] = adapted_setup(model, adapter, image, tokens)

    print(f'timing {len(steps)} training setups x {args.repeats} steps ...', flush=True)
    step_times = interleaved_times(steps, args.repeats, args.warmup, args.device)
    param_times = interleaved_times(
        {f'H-CLIP {v}': parametrisation_setup(*adapters[v]) for v in args.variants},
        args.repeats, 1, args.device)
    memory = {}
    if not args.no_memory:
        for name, fn in steps.items():
            memory[name] = peak_memory(fn, args.device)

    # inference: merged adapter (perturbed, so merging changes the weights) vs plain open_clip;
    # the merged weights are also loaded into a fresh open_clip model, which must cost the same
    variant = args.variants[0]
    merged_model, merged_adapter = adapters[variant]
    perturb_adapter(merged_adapter, scale=0.1)
    merged_adapter.merge(merged_model)
    merged_model.eval()
    plain_eval = copy.deepcopy(base).eval().requires_grad_(False)
    fresh = copy.deepcopy(base).eval().requires_grad_(False)
    fresh.load_state_dict(merged_model.state_dict())

    def infer(model):
        def run():
            with torch.no_grad():
                model(image, tokens)
        return run

    print('timing inference ...', flush=True)
    infer_times = interleaved_times(
        {
            'plain open_clip': infer(plain_eval),
            f'merged H-CLIP {variant}': infer(merged_model),
            'merged weights in a fresh open_clip': infer(fresh),
        }, args.infer_repeats, 1, args.device)

    result = dict(
        command='python ' + ' '.join([os.path.relpath(__file__)] + (argv or sys.argv[1:])),
        model=args.model, image_size=args.image_size, prompts=args.prompts, batch=args.batch,
        block_size=args.block_size, device=args.device, threads=torch.get_num_threads(),
        torch=torch.__version__, platform=platform.platform(),
        processor=(torch.cuda.get_device_name() if args.device.startswith('cuda') else _cpu_name()),
        step_times=step_times, step_trainable={n: f.num_trainable for n, f in steps.items()},
        persistent={n: f.persistent() for n, f in steps.items()},
        peak_memory=memory, infer_times=infer_times, parametrisation_times=param_times)
    report = render(result)
    write_report(report, args.out)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
    return result


def _cpu_name():
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def render(r) -> str:
    med = {n: statistics.median(t) for n, t in r['step_times'].items()}
    base = med['plain fine-tuning']
    lines = [
        '# Benchmark: H-CLIP adapter vs plain fine-tuning', '',
        f"Produced by `{r['command']}` (numbers below are from that one run).", '',
        f"- model: {r['model']} (random weights), {r['batch']} image(s) of {r['image_size']}², "
        f"{r['prompts']} prompts × 77 tokens, q = {r['block_size']}",
        f"- device: {r['device']} ({r['processor']}), torch {r['torch']}, "
        f"{r['threads']} intra-op threads", '',
        '## Training step (forward + backward)', '',
        '| setup | trainable params | median step (s) | all steps (s) | ratio to plain | '
        'peak step memory (MiB) | memory ratio | persistent extra (MiB) |',
        '| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |'
    ]
    mem_base = r['peak_memory'].get('plain fine-tuning')
    for name, times in r['step_times'].items():
        mem = r['peak_memory'].get(name)
        mem_txt = f'{mem / 2**20:.0f}' if mem is not None else 'n/a'
        mem_ratio = f'{mem / mem_base:.3f}' if mem is not None and mem_base else 'n/a'
        lines.append(f"| {name} | {r['step_trainable'][name]:,} | {med[name]:.3f} | "
                     f"{', '.join(f'{t:.2f}' for t in times)} | {med[name] / base:.3f} | "
                     f"{mem_txt} | {mem_ratio} | {r['persistent'][name] / 2**20:.0f} |")
    lines += [
        '', '### The parametrisation alone', '',
        'Adapter forward (DCRC, Cayley, all transformed weights) plus its backward from given '
        'weight gradients, timed in the same run; the share of the plain step it represents is '
        'the overhead H-CLIP cannot avoid.', '',
        '| setup | median (s) | all (s) | share of the plain step |', '| --- | ---: | --- | ---: |'
    ]
    for name, times in r['parametrisation_times'].items():
        m = statistics.median(times)
        lines.append(f"| {name} | {m:.3f} | {', '.join(f'{t:.2f}' for t in times)} | "
                     f'{m / base:.3f} |')
    inf = {n: statistics.median(t) for n, t in r['infer_times'].items()}
    names = list(inf)
    lines += [
        '', '## No-grad inference (image + prompts)', '',
        '| setup | median (s) | all runs (s) | ratio to plain |', '| --- | ---: | --- | ---: |'
    ]
    for name in names:
        lines.append(f"| {name} | {inf[name]:.3f} | "
                     f"{', '.join(f'{t:.2f}' for t in r['infer_times'][name])} | "
                     f'{inf[name] / inf[names[0]]:.3f} |')
    lines += [
        '', 'Peak step memory: the highest total of live tensor bytes allocated during one step, '
        'from the allocator events of `torch.profiler` (CPU) or `torch.cuda.max_memory_allocated` '
        '(GPU); the model weights themselves are excluded. The H-CLIP step also holds the '
        'transformed weights (needed by the backward pass of the attention projections); plain '
        'fine-tuning uses the parameters in place. Persistent extra: memory held between steps '
        'beyond the model (adapter parameters and the cached stack of frozen target weights; '
        'optimizer states not included).', ''
    ]
    return '\n'.join(lines)


if __name__ == '__main__':
    main()
