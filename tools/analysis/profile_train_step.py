"""Forward/backward time of one H-CLIP ViT-B/16 training step on CPU and its split.

Random weights (pretrained=None), 384x384 input, 171 classes (COCO-Stuff), batch 1.
Split: text tower (neck: 171 prompts through the tuned text tower, incl. adapter weights),
image tower (dense forward), head (cost aggregation + BCE loss); each measured alone as
forward+backward, and the whole step (segmentor.loss + backward) measured together.

    python tools/analysis/profile_train_step.py [--repeats 3] [--threads N]
"""
import argparse
import json
import os.path as osp
import time

import torch
from mmengine.config import Config
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmengine.structures import PixelData
from mmseg.utils import register_all_modules

import mmseg_hclip  # noqa: F401

ROOT = osp.dirname(osp.dirname(osp.abspath(mmseg_hclip.__file__)))


def timed(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--config', default=osp.join(ROOT, 'configs/_base_/models/hclip_vitb16.py'))
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(args.config)
    cfg.model.backbone.pretrained = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    classes = json.load(open(osp.join(ROOT, 'mmseg_hclip/data/classnames/coco.json')))
    model.set_vocabulary(classes)
    n = len(classes)
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

    res = dict(step=timed(step, args.repeats), text_tower=timed(text, args.repeats),
               image_tower=timed(image, args.repeats), head=timed(head_only, args.repeats),
               adapter_weights=timed(adapter_only, args.repeats))
    print(f'threads={torch.get_num_threads()} classes={n} input={size}')
    for k, v in res.items():
        print(f'{k:16s} {v:8.2f} s   {100 * v / res["step"]:5.1f}% of the step')
    print('(text/image tower times include computing the adapted weights once each;'
          ' adapter_weights is that part alone)')


if __name__ == '__main__':
    main()
