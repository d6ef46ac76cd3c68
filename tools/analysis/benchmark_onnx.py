"""onnxruntime vs PyTorch inference on the CPU for the exported (merged) H-CLIP model.

    python tools/analysis/benchmark_onnx.py [--config configs/hclip_vitb16_coco-stuff.py]
        [--classes 171 847] [--rounds 5] [--threads 2] [--out docs/onnx_benchmark.md]

Builds the config's model with random CLIP weights (``pretrained=None``: no download; the
cost does not depend on the values), folds the adapter in, exports it with
tools/deploy/export_onnx.py into a temporary folder and times, on the same inputs:

* image side + head for one image in 'whole' mode (one view at the input size, 384² for
  ViT-B/16) for each class count (the text embeddings are cached per vocabulary in both
  runtimes, so they are not part of a per-image cost);
* the text side for the prompts of each class count (both cut after the last end token:
  ``HCLIPBackbone.encode_text`` does it inside, onnx_demo.py before the graph).

PyTorch runs the same modules as the segmentor (``backbone``, ``decode_head``,
``backbone.encode_text``) under ``torch.no_grad`` in fp32. Both runtimes get the same
number of threads. The machine may be shared: each round times PyTorch and onnxruntime back
to back (the order alternates between rounds) and the result is the median of the per-round
ratios, with the load average printed before and after. The largest output differences are
reported too.
"""
import argparse
import json
import os
import os.path as osp
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.join(ROOT, 'tools', 'deploy'))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmark_peft import _cpu_name  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=osp.join(ROOT, 'configs',
                                                     'hclip_vitb16_coco-stuff.py'))
    parser.add_argument('--classes', type=int, nargs='+', default=[171, 847],
                        help='vocabulary sizes (847 > pad_len: the top-k head)')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', default=None, help='write a Markdown report here')
    parser.add_argument('--cfg-options', nargs='+', default=[],
                        help='key=value overrides (e.g. model.backbone.img_size=224)')
    return parser.parse_args(argv)


def loadavg() -> str:
    return ' '.join(f'{v:.2f}' for v in os.getloadavg())



def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def paired(name, torch_fn, ort_fn, rounds, warmup, log):
    """Interleaved rounds; returns a result row with median times and ratio."""
    for _ in range(warmup):
        torch_fn()
        ort_fn()
    t_torch, t_ort, ratios = [], [], []
    for r in range(rounds):
        if r % 2 == 0:
            a, _ = timed(torch_fn)
            b, _ = timed(ort_fn)
        else:
            b, _ = timed(ort_fn)
            a, _ = timed(torch_fn)
        t_torch.append(a)
        t_ort.append(b)
        ratios.append(a / b)
        log(f'    {name} round {r + 1}: PyTorch {a:.3f} s, onnxruntime {b:.3f} s, '
            f'ratio {a / b:.2f}  (load {loadavg()})')
    return dict(name=name, torch=statistics.median(t_torch), ort=statistics.median(t_ort),
                ratio=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios))


def main(argv=None):
    args = parse_args(argv)
    import onnxruntime as ort

    import export_onnx
    from mmseg_hclip.apis import init_model

    torch.set_num_threads(args.threads)
    lines = []

    def log(msg):
        print(msg, flush=True)
        lines.append(msg)

    load_before = loadavg()
    cfg_options = {'model.backbone.pretrained': None}
    for item in args.cfg_options:
        key, _, value = item.partition('=')
        cfg_options[key] = json.loads(value) if value[:1] in '[{0123456789-' else value
    torch.manual_seed(0)
    model = init_model(args.config, None, device='cpu', cfg_options=cfg_options)
    export_onnx.merge_for_export(model)
    backbone, head, neck = model.backbone, model.decode_head, model.neck
    h, w = export_onnx._pair(backbone.img_size)

    results, diffs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        with torch.no_grad():
            export_onnx.export_all(model, tmp, log=log)
        export_s = time.perf_counter() - start
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        opts.inter_op_num_threads = 1
        sess = {k: ort.InferenceSession(osp.join(tmp, export_onnx.FILES[k]), opts,
                                        providers=['CPUExecutionProvider'])
                for k in ('image', 'head', 'head_topk', 'text')
                if osp.isfile(osp.join(tmp, export_onnx.FILES[k]))}
        tok = __import__('clip_tokenizer').ClipTokenizer(
            osp.join(tmp, export_onnx.FILES['bpe']), backbone.clip.context_length)
        g = torch.Generator().manual_seed(0)
        image = torch.randn(1, 3, h, w, generator=g)
        for n in args.classes:
            names = [f'class number {i}' for i in range(n)]
            with torch.no_grad():
                text = neck(backbone, names)
            text_np = text.numpy()
            key = 'head_topk' if 0 < head.pad_len < n else 'head'

            def run_torch():
                with torch.no_grad():
                    feats = backbone(image)
                    return head(dict(feats, text=text))

            def run_ort():
                feats = sess['image'].run(None, {'image': image.numpy()})
                feed = {'dense': feats[0], 'text': text_np}
                feed.update({f'guidance_{i}': x for i, x in enumerate(feats[1:])})
                return sess[key].run(None, feed)[0]

            diffs[f'image + head, {n} classes'] = float(
                np.abs(run_torch().numpy() - run_ort()).max())
            results.append(paired(f'image + {key}, {n} classes', run_torch, run_ort,
                                  args.rounds, args.warmup, log))

            prompts = [neck.templates[0].replace('{}', c) for c in names]
            tokens_t = backbone.tokenize(prompts).cpu()
            tokens_np = tok(prompts)
            assert np.array_equal(tokens_np, tokens_t.numpy())
            tokens_np = export_onnx.cut_tokens(tokens_np)  # as onnx_demo.py feeds them

            def text_torch():
                with torch.no_grad():
                    return F.normalize(backbone.encode_text(tokens_t), dim=-1)

            def text_ort():
                return sess['text'].run(None, {'tokens': tokens_np})[0]

            diffs[f'text, {n} prompts'] = float(np.abs(text_torch().numpy() - text_ort()).max())
            results.append(paired(f'text, {n} prompts', text_torch, text_ort, args.rounds,
                                  args.warmup, log))
    load_after = loadavg()

    given = sys.argv[1:] if argv is None else argv
    cmd = 'python tools/analysis/benchmark_onnx.py ' + ' '.join(given)
    report = [
        '# ONNX export: onnxruntime vs PyTorch on the CPU',
        '',
        f'Command: `{cmd.strip()}`',
        '',
        f'Model: `{osp.relpath(args.config, ROOT)}` with random CLIP weights '
        f'(`pretrained=None`), adapter merged, input {h}x{w}, pad_len {head.pad_len}, '
        f'fp32. Export: {export_s:.0f} s.',
        f"Machine: {_cpu_name() or 'unknown CPU'}, {os.cpu_count()} logical CPUs, "
        f'{args.threads} threads for '
        f'both runtimes; torch {torch.__version__}, onnxruntime {ort.__version__}, '
        f'Python {platform.python_version()}.',
        f'Load average (1, 5, 15 min) before: {load_before}; after: {load_after} (the machine '
        'is shared with other jobs: ratios come from back-to-back pairs, order alternating).',
        '',
        f'{args.rounds} interleaved rounds after {args.warmup} warm-up round(s); median '
        'seconds and the median (min-max) of the per-round ratio PyTorch / onnxruntime '
        '(> 1: onnxruntime faster).',
        '',
        '| what | PyTorch (s) | onnxruntime (s) | ratio (min-max) |',
        '| --- | ---: | ---: | ---: |',
    ]
    for r in results:
        report.append(f'| {r["name"]} | {r["torch"]:.3f} | {r["ort"]:.3f} | '
                      f'{r["ratio"]:.2f} ({r["ratio_min"]:.2f}-{r["ratio_max"]:.2f}) |')
    report += ['', 'Largest |onnxruntime - PyTorch| on these inputs (head: logits; text: '
               'normalised embeddings):', '']
    report += [f'- {k}: {v:.2e}' for k, v in diffs.items()]
    report += ['', '<details><summary>log</summary>', '', '```'] + lines
    report += ['```', '', '</details>', '']
    text = '\n'.join(report)
    print(text)
    if args.out:
        with open(args.out, 'w') as f:
            f.write(text)
        print(f'wrote {args.out}')
    return results, diffs


if __name__ == '__main__':
    main()
