"""Pretrain the quickstart's tiny CLIP on captioned shape scenes (CPU; deterministic).

Writes an ordinary open_clip state dict (fp16 tensors) that the quickstart configs load with
``model.backbone.pretrained=<file>`` like real CLIP weights, plus ``<file>.json`` with the
arguments, the zero-shot evaluation of the written weights, the file's SHA-256 and the time.

The shipped ``mmseg_hclip/quickstart/tiny_clip_shapes.pt`` was made by the default command::

    python tools/quickstart/pretrain_tiny_clip.py

Evaluate an existing file only::

    python tools/quickstart/pretrain_tiny_clip.py --eval-only mmseg_hclip/quickstart/tiny_clip_shapes.pt

Equal arguments and thread count on the same kind of CPU give the same file; another thread
count or CPU may change the float summation order and with it the last bits of the weights.
"""
import argparse
import hashlib
import json
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_OUT = osp.join(ROOT, 'mmseg_hclip', 'quickstart', 'tiny_clip_shapes.pt')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=DEFAULT_OUT, help='checkpoint to write')
    parser.add_argument('--steps', type=int, default=3000)
    parser.add_argument('--batch-size', type=int, default=128)
    parser.add_argument('--pool-size', type=int, default=10000,
                        help='scenes rendered before training (captions are redrawn)')
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--weight-decay', type=float, default=0.1)
    parser.add_argument('--warmup', type=int, default=100)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=1,
                        help='intra-op threads (part of what makes the file reproducible)')
    parser.add_argument('--log-every', type=int, default=100)
    parser.add_argument('--eval-pairs', type=int, default=256,
                        help='held-out scene-caption pairs for the retrieval accuracy')
    parser.add_argument('--eval-per-name', type=int, default=20,
                        help='held-out single-shape images per name for the classification')
    parser.add_argument('--eval-only', metavar='FILE',
                        help='only evaluate this checkpoint (no training)')
    return parser.parse_args(argv)


def sha256(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def load_and_evaluate(path, threads=None, num_pairs=256, per_name=20):
    """Load ``path`` with open_clip's own loader into a fresh tiny CLIP and evaluate it."""
    import open_clip
    import torch

    from mmseg_hclip.quickstart.tiny_clip import build_tiny_clip, evaluate_tiny_clip
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model = build_tiny_clip()
        open_clip.load_checkpoint(model, path, strict=True)
        return evaluate_tiny_clip(model, num_pairs=num_pairs, per_name=per_name)
    finally:
        torch.set_num_threads(old)


def format_eval(ev):
    return (f'zero-shot retrieval on {ev["num_pairs"]} held-out captioned scenes: '
            f'image->text top-1 {ev["i2t_top1"]:.1f} %, text->image top-1 {ev["t2i_top1"]:.1f} % '
            f'(chance {ev["chance_i2t"]:.1f} %)\n'
            f'zero-shot classification of single shapes among the 12 names: '
            f'{ev["cls_all"]:.1f} % (seen names {ev["cls_seen"]:.1f} %, '
            f'unseen names {ev["cls_unseen"]:.1f} %)')


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, ROOT)
    if args.eval_only:
        if not osp.isfile(args.eval_only):
            raise SystemExit(f'--eval-only {args.eval_only}: no such file')
        print(format_eval(load_and_evaluate(args.eval_only, args.threads, args.eval_pairs,
                                            args.eval_per_name)))
        return
    import torch

    from mmseg_hclip.quickstart.tiny_clip import fp16_state_dict, pretrain_tiny_clip
    t0 = time.time()
    model = pretrain_tiny_clip(steps=args.steps, batch_size=args.batch_size,
                               pool_size=args.pool_size, lr=args.lr,
                               weight_decay=args.weight_decay, warmup=args.warmup,
                               seed=args.seed, threads=args.threads,
                               log=lambda s: print(s, flush=True), log_every=args.log_every)
    seconds = time.time() - t0
    out = osp.abspath(args.out)
    os.makedirs(osp.dirname(out), exist_ok=True)
    torch.save(fp16_state_dict(model), out)
    ev = load_and_evaluate(out, args.threads, args.eval_pairs,  # the weights as written (fp16)
                           args.eval_per_name)
    record = dict(args={k: v for k, v in vars(args).items() if k not in ('out', 'eval_only')},
                  zero_shot=ev, sha256=sha256(out), bytes=osp.getsize(out),
                  train_seconds=round(seconds, 1), torch=torch.__version__,
                  load_average=os.getloadavg())
    with open(out + '.json', 'w') as f:
        json.dump(record, f, indent=1)
    print(f'wrote {out} ({record["bytes"] / 2**20:.2f} MiB, sha256 {record["sha256"][:16]}...) '
          f'after {seconds:.0f} s')
    print(format_eval(ev))


if __name__ == '__main__':
    main()
