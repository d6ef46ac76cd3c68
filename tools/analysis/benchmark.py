"""One run comparing the CLIP fine-tuning methods of H-CLIP's Table 3 on the whole segmentor.

On the same model (one H-CLIP segmentor config: CLIP towers, text neck, cost-aggregation head,
random weights, the same CLIP and head weights in every setup) and the same input (one image,
one label map, one vocabulary), measures:

* training step (``segmentor.loss`` forward + backward) of four setups that differ only in
  ``model.backbone.adapter``: **H-CLIP** (POF + DCRC, the config's adapter), **frozen CLIP**
  (``adapter=None``, only the head trains), **LoRA** r = 64 on q, k, v, out (the parameter
  count of H-CLIP's blocks) and **CAT-Seg-style attention fine-tuning** (q, v weights and
  biases), the last two from ``projects/peft_baselines``;
* peak tensor memory of one such step (allocator events of ``torch.profiler`` on CPU);
* eval-mode inference (``segmentor.predict``, ``test_cfg.mode='whole'``) of H-CLIP with the
  adapter merged into CLIP (``merge_in_eval=True``, the default) against unmerged
  (``merge_in_eval=False``: the transformed weights are recomputed every forward), with the
  frozen CLIP as the plain-CLIP reference.

The timing helpers (interleaved A B C D A B C D ... rounds, profiler-based peak memory) are
those of ``tools/analysis/benchmark_peft.py``. Medians and ratios are reported: on a busy
machine every setup is slowed alike. Usage::

    python tools/analysis/benchmark.py                    # writes docs/benchmark.md
    python tools/analysis/benchmark.py --img-size 384 --classes 171 --pad-len 256 --repeats 3
    python tools/analysis/benchmark.py --arch tiny --img-size 96 --classes 8 --pad-len 16
"""
import argparse
import copy
import json
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
from typing import Callable, Dict, List, Optional

import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
for _path in (ROOT, osp.dirname(osp.abspath(__file__))):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from benchmark_peft import (_cpu_name, interleaved_times, peak_memory,  # noqa: E402
                            write_report)

ARCHS = {
    'ViT-B-16': 'configs/_base_/models/hclip_vitb16.py',
    'ViT-L-14': 'configs/_base_/models/hclip_vitl14.py',
    'tiny': 'configs/_base_/models/hclip_tiny.py',
}
#: The reference training setting of each architecture: (image side, classes, pad_len).
REFERENCE = {'ViT-B-16': (384, 171, 256), 'ViT-L-14': (336, 171, 256)}

#: setup name -> ``model.backbone.adapter`` (``'config'``: the config's own H-CLIP adapter).
SETUPS = {
    'H-CLIP': 'config',
    'frozen CLIP': None,
    'LoRA (q, k, v, out)': dict(type='LoRAAdapter', rank=64, alpha=64,
                                targets=('q', 'k', 'v', 'out')),
    'attention FT (q, v)': dict(type='AttentionFinetuneAdapter', targets=('q', 'v'),
                                train_bias=True),
}
BASELINE = 'H-CLIP'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='ViT-B-16', choices=sorted(ARCHS),
                        help='model config: ' + ', '.join(f'{k}: {v}' for k, v in ARCHS.items()))
    parser.add_argument('--img-size', type=int, default=224,
                        help='input side; the head\'s feature_size follows, its window is '
                        'min(config window, grid // 2) (reference ViT-B/16: 384)')
    parser.add_argument('--classes', type=int, default=171,
                        help='vocabulary size (COCO-Stuff names, cycled beyond 171)')
    parser.add_argument('--pad-len', type=int, default=64,
                        help='head pad_len (class tokens of class aggregation; reference: 256)')
    parser.add_argument('--lora-rank', type=int, default=None,
                        help='LoRA rank (default 64; the tiny model uses block_size / 2)')
    parser.add_argument('--repeats', type=int, default=3, help='timed steps per setup')
    parser.add_argument('--warmup', type=int, default=1, help='untimed steps per setup')
    parser.add_argument('--infer-repeats', type=int, default=None,
                        help='timed inference runs per setup (default: --repeats)')
    parser.add_argument('--threads', type=int, default=2, help='torch intra-op threads')
    parser.add_argument('--no-memory', action='store_true', help='skip the profiler pass')
    parser.add_argument('--out', default='docs/benchmark.md', help='markdown report ('' = none)')
    parser.add_argument('--json', default=None, help='also write the raw numbers here')
    return parser.parse_args(argv)


# ----------------------------------------------------------------------------- building
def model_config(args, adapter='config'):
    """The segmentor config of ``args.arch`` at the benchmark's size, with one adapter."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(ROOT, ARCHS[args.arch]))
    model = cfg.model
    model.backbone.pretrained = None
    model.backbone.img_size = args.img_size
    patch = 16 if args.arch != 'ViT-L-14' else 14
    if args.arch == 'tiny':
        patch = model.backbone.arch['vision_cfg']['patch_size']
    grid = args.img_size // patch
    model.decode_head.feature_size = (grid, grid)
    model.decode_head.window_size = min(model.decode_head.window_size, grid // 2)
    model.decode_head.pad_len = args.pad_len
    model.test_cfg = dict(mode='whole')
    if adapter != 'config':
        if adapter is not None and adapter.get('type') == 'LoRAAdapter':
            adapter = dict(adapter)
            rank = args.lora_rank or (64 if args.arch != 'tiny' else
                                      model.backbone.adapter['block_size'] // 2)
            adapter.update(rank=rank, alpha=rank)
        model.backbone.adapter = adapter
    return model


def class_names(n: int) -> List[str]:
    coco = json.load(open(osp.join(ROOT, 'mmseg_hclip/data/classnames/coco.json')))
    return [coco[i % len(coco)] + ('' if i < len(coco) else f' {i // len(coco)}')
            for i in range(n)]


def build_models(args) -> Dict[str, torch.nn.Module]:
    """One segmentor per setup; every one gets the CLIP and head weights of the first."""
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    import mmseg_hclip  # noqa: F401
    import projects.peft_baselines.peft_baselines  # noqa: F401  (registers the baselines)
    register_all_modules(init_default_scope=True)
    vocabulary = class_names(args.classes)
    models, shared = {}, None
    for name, adapter in SETUPS.items():
        torch.manual_seed(0)
        model = MODELS.build(model_config(args, adapter))
        if shared is None:
            shared = {k: v for k, v in model.state_dict().items() if '.adapter.' not in k}
        else:
            missing, unexpected = model.load_state_dict(shared, strict=False)
            assert not unexpected and all('.adapter.' in k for k in missing), (missing,
                                                                              unexpected)
        model.set_vocabulary(vocabulary)
        models[name] = model.train()
    return models


def make_inputs(args, num_classes: int):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    size = (args.img_size, args.img_size)
    inputs = torch.randn(1, 3, *size, generator=g)
    label = torch.randint(0, num_classes, (1, *size), generator=g)
    sample = SegDataSample(gt_sem_seg=PixelData(data=label))
    sample.set_metainfo(dict(img_shape=size, pad_shape=size, ori_shape=size))
    return inputs, sample


# ----------------------------------------------------------------------------- setups
def _tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if torch.is_tensor(t) and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def train_setup(model, inputs, sample) -> Callable[[], None]:
    """``segmentor.loss`` + backward; attributes for interleaved_times and the report."""
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    adapter = model.backbone.adapter

    def step():
        losses = model.loss(inputs, [sample.clone()])
        sum(v for k, v in losses.items() if 'loss' in k).backward()

    def zero_grad():
        for param in trainable:
            param.grad = None

    def persistent() -> int:
        """Adapter memory held between steps (parameters, buffers, caches of frozen weights)."""
        if adapter is None:
            return 0
        cache = getattr(adapter, '_frozen_cache', {}) or {}
        cached = [t for v in cache.values() for t in (v if isinstance(v, tuple) else (v, ))]
        return _tensor_bytes(list(adapter.parameters()) + list(adapter.buffers()) + cached)

    step.zero_grad = zero_grad
    step.clip_trainable = (0 if adapter is None else
                           sum(p.numel() for p in adapter.parameters() if p.requires_grad))
    step.head_trainable = sum(p.numel() for p in trainable) - step.clip_trainable
    step.persistent = persistent
    return step


def infer_setup(model, inputs, sample) -> Callable[[], None]:
    model.eval()

    def run():
        with torch.no_grad():
            run.last = model.predict(inputs, [sample.clone()])[0].seg_logits.data

    run.last = None
    return run


def inference_models(models) -> Dict[str, torch.nn.Module]:
    """H-CLIP merged / unmerged (a perturbed adapter, so merging changes the weights) and the
    frozen CLIP (plain CLIP weights, the cost a merged model should have)."""
    from mmseg_hclip.peft.testing import perturb_adapter
    merged = models[BASELINE]
    perturb_adapter(merged.backbone.adapter, scale=0.1)
    unmerged = copy.deepcopy(merged)
    unmerged.backbone.merge_in_eval = False
    return {'H-CLIP merged': merged, 'H-CLIP unmerged': unmerged,
            'frozen CLIP (plain CLIP)': models['frozen CLIP']}


# ----------------------------------------------------------------------------- run
def run_benchmark(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    models = build_models(args)
    inputs, sample = make_inputs(args, args.classes)
    steps = {name: train_setup(model, inputs, sample) for name, model in models.items()}
    print(f'timing {len(steps)} training setups x {args.repeats} steps ...', file=sys.stderr,
          flush=True)
    step_times = interleaved_times(steps, args.repeats, args.warmup, 'cpu')
    memory = {}
    if not args.no_memory:
        print('peak memory ...', file=sys.stderr, flush=True)
        for name, fn in steps.items():
            memory[name] = peak_memory(fn, 'cpu')
    for fn in steps.values():
        fn.zero_grad()

    print('timing inference ...', file=sys.stderr, flush=True)
    infer = {name: infer_setup(m, inputs, sample) for name, m in inference_models(models).items()}
    infer_times = interleaved_times(infer, args.infer_repeats or args.repeats, 1, 'cpu')
    scores = {name: fn.last for name, fn in infer.items()}
    merged_vs_unmerged = float((scores['H-CLIP merged'] - scores['H-CLIP unmerged']).abs().max())
    merged_vs_frozen = float(
        (scores['H-CLIP merged'] - scores['frozen CLIP (plain CLIP)']).abs().max())
    assert models[BASELINE].backbone.merged, 'the merged setup did not merge'
    load_after = os.getloadavg()

    head_cfg = model_config(args).decode_head
    return dict(
        command='python ' + ' '.join([osp.relpath(osp.abspath(__file__), ROOT)] +
                                     list(args.argv)),
        arch=args.arch, config=ARCHS[args.arch], img_size=args.img_size, classes=args.classes,
        pad_len=args.pad_len, window_size=head_cfg.window_size,
        feature_size=list(head_cfg.feature_size), lora_rank=model_config(
            args, SETUPS['LoRA (q, k, v, out)']).backbone.adapter['rank'],
        repeats=args.repeats, warmup=args.warmup,
        infer_repeats=args.infer_repeats or args.repeats, threads=torch.get_num_threads(),
        cpus=os.cpu_count(), load_before=list(load_before), load_after=list(load_after),
        torch=torch.__version__, platform=platform.platform(), processor=_cpu_name(),
        commit=_git_commit(), step_times=step_times,
        clip_trainable={n: f.clip_trainable for n, f in steps.items()},
        head_trainable={n: f.head_trainable for n, f in steps.items()},
        persistent={n: f.persistent() for n, f in steps.items()}, peak_memory=memory,
        infer_times=infer_times, merged_vs_unmerged_max_abs=merged_vs_unmerged,
        merged_vs_frozen_max_abs=merged_vs_frozen)


def _git_commit() -> Optional[str]:
    try:
        return subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def ratios(times: Dict[str, List[float]], base: str) -> Dict[str, float]:
    med = {n: statistics.median(t) for n, t in times.items()}
    return {n: m / med[base] for n, m in med.items()}


def render(r: dict) -> str:
    med = {n: statistics.median(t) for n, t in r['step_times'].items()}
    step_ratio = ratios(r['step_times'], BASELINE)
    mem = r['peak_memory']
    mib = 2.0**20
    load = '/'.join(f'{x:.2f}' for x in r['load_before'])
    load2 = '/'.join(f'{x:.2f}' for x in r['load_after'])
    lines = [
        '# Benchmark: H-CLIP vs frozen CLIP, LoRA and attention fine-tuning', '',
        f"Produced by `{r['command']}` at commit {r['commit']} (all numbers below are from that "
        'one run).', '',
        f"- model: `{r['config']}` ({r['arch']}), random weights (`pretrained=None`); the same "
        'CLIP and head weights and the same input in every setup; the setups differ only in '
        '`model.backbone.adapter`',
        f"- input: batch 1, {r['img_size']}×{r['img_size']} image, random label map, "
        f"{r['classes']} classes (COCO-Stuff names, one prompt each); head pad_len "
        f"{r['pad_len']}, feature map {r['feature_size'][0]}×{r['feature_size'][1]}, "
        f"window {r['window_size']}; LoRA rank {r['lora_rank']} (α = rank)",
        f"- CPU: {r['processor']}, {r['cpus']} cores shared with other jobs, torch {r['torch']}, "
        f"**{r['threads']} intra-op thread(s)**; load average (1/5/15 min) {load} at the start, "
        f'{load2} at the end',
        f"- {r['warmup']} untimed + {r['repeats']} timed training steps per setup, "
        f"{r['infer_repeats']} timed inference runs per setup, in interleaved rounds "
        '(A B C D, B C D A, ...); medians compared',
    ]
    ref = REFERENCE.get(r['arch'])
    if ref and (r['img_size'], r['classes'], r['pad_len']) != ref:
        lines.append(
            f"- **Shrunk** from the reference training setting ({ref[0]}², {ref[1]} classes, "
            f"pad_len {ref[2]}) to {r['img_size']}², {r['classes']} classes, pad_len "
            f"{r['pad_len']} so that the run fits on this CPU. The cost-aggregation head shrinks "
            'more than the CLIP towers, so CLIP-side differences weigh more here than at the '
            'reference size.')
    lines += [
        '', '## Training step (`segmentor.loss` forward + backward)', '',
        '| setup | trainable CLIP-side params | trainable head params | median step (s) | '
        'all steps (s) | step time / H-CLIP | peak step memory (MiB) | memory / H-CLIP | '
        'adapter memory between steps (MiB) |',
        '| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |'
    ]
    for name, times in r['step_times'].items():
        m = mem.get(name)
        lines.append(
            f"| {name} | {r['clip_trainable'][name]:,} | {r['head_trainable'][name]:,} | "
            f"{med[name]:.2f} | {', '.join(f'{t:.2f}' for t in times)} | "
            f'{step_ratio[name]:.3f} | ' + (f'{m / mib:.0f}' if m is not None else 'n/a') +
            ' | ' + (f'{m / mem[BASELINE]:.3f}' if m is not None and mem.get(BASELINE) else
                     'n/a') + f" | {r['persistent'][name] / mib:.1f} |")
    inf = {n: statistics.median(t) for n, t in r['infer_times'].items()}
    lines += [
        '', '## Inference (eval mode, `segmentor.predict`, whole image)', '',
        '| setup | median (s) | all runs (s) | time / H-CLIP merged |',
        '| --- | ---: | --- | ---: |'
    ]
    for name, times in r['infer_times'].items():
        lines.append(f"| {name} | {inf[name]:.3f} | {', '.join(f'{t:.3f}' for t in times)} | "
                     f"{inf[name] / inf['H-CLIP merged']:.3f} |")
    lines += [
        '', f"**Unmerged / merged inference time: "
        f"{inf['H-CLIP unmerged'] / inf['H-CLIP merged']:.3f}**; largest difference of their "
        f"class scores: {r['merged_vs_unmerged_max_abs']:.2e}. The adapter is perturbed away "
        'from its identity init before this part, so merging really changes the CLIP weights: '
        "the merged model's scores differ from the frozen CLIP's by up to "
        f"{r['merged_vs_frozen_max_abs']:.2e}.",
        '', '## Notes', '',
        '- Step time covers the whole segmentor: text tower (one prompt per class), image '
        'tower, cost-aggregation head and BCE loss, forward and backward; the optimiser step is '
        'not included (Adam keeps 2 × 4 bytes per trainable parameter on top of the adapter '
        'memory column).',
        '- Peak step memory: the highest total of live tensor bytes allocated during one step '
        '(relative to its start), from the allocator events of `torch.profiler` at op '
        'granularity (temporaries freed inside one op are not seen); model weights are '
        'excluded. H-CLIP, LoRA and attention FT hold the transformed weights of every target '
        'during the step (needed by the backward pass).',
        '- Adapter memory between steps: the adapter\'s parameters, buffers and cached stacks '
        'of frozen target weights (attention FT stores trainable copies of the q/v weights).',
        '- Inference: the vocabulary is fixed, so in eval the text neck serves cached text '
        'embeddings after the first (untimed) run in every setup; the times are per image. '
        'Merged, H-CLIP runs on the folded CLIP weights (the frozen-CLIP row is the same '
        'computation on the pretrained weights); unmerged (`merge_in_eval=False`) it recomputes '
        'DCRC, the Cayley solves and all transformed weights and runs every block through '
        '`torch.func.functional_call` on each forward.', ''
    ]
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    result = run_benchmark(args)
    report = render(result)
    write_report(report, args.out)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
