"""Export a (merged) H-CLIP model to ONNX: image side, cost-aggregation head, text side.

    python tools/deploy/export_onnx.py CONFIG CHECKPOINT --out DIR

CHECKPOINT is a training checkpoint (its adapter is folded into the CLIP weights first, as
tools/merge_weights.py does) or a merged one. DIR receives:

==========================  ===========================================================
``image_encoder.onnx``      ``image`` [B, 3, H, W] float32 (RGB, normalised with the
                            config's mean/std, H x W = the backbone's input size) ->
                            ``dense`` [B, C, h, w] (joint space, not normalised) and
                            ``guidance_i`` [B, D, h, w] (one per guidance block)
``head.onnx``               ``dense``, ``guidance_i``, ``text`` [N, P, C] -> ``logits``
                            [B, N, 4h, 4w] for N <= pad_len classes (N dynamic)
``head_topk.onnx``          the same for N > pad_len: the pad_len most similar classes
                            are aggregated, the others get logit -100 (N dynamic)
``text_encoder.onnx``       ``tokens`` [M, L] int64 -> ``text`` [M, C] (L2-normalised)
``bpe_simple_vocab_16e6.txt.gz``   CLIP's BPE merges (for the torch-free tokenizer)
``deploy.json``             everything the runtime needs: sizes, mean/std, prompt
                            templates, synonym mode, pad_len, inference settings
==========================  ===========================================================

The two head graphs exist because the class count picks a different computation (padding
vs top-k selection); each is exported with a dynamic class axis over its range.
``tools/deploy/onnx_demo.py`` runs them with onnxruntime alone (no torch). Unless
``--no-check``, the export is verified: onnxruntime and PyTorch outputs are compared on
random inputs (several class counts on both sides of pad_len) and the largest differences
are printed; the export fails if one exceeds ``--tolerance``.
"""
import argparse
import contextlib
import json
import os
import os.path as osp
import shutil
import sys
import time
import warnings
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    import mmseg_hclip  # noqa: F401
except ImportError:  # running from a checkout without installing the package
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
    import mmseg_hclip  # noqa: F401

from mmseg_hclip.apis import init_model

FILES = dict(image='image_encoder.onnx', head='head.onnx', head_topk='head_topk.onnx',
             text='text_encoder.onnx', meta='deploy.json',
             bpe='bpe_simple_vocab_16e6.txt.gz')


# ------------------------------------------------------------------ export wrappers
class ImageEncoder(nn.Module):
    """The backbone's image side with tensor outputs: ``(dense, guidance_0, ...)``."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, image: torch.Tensor):
        out = self.backbone(image)
        return (out['dense'], *out['guidance'])


class HeadWrapper(nn.Module):
    """The decode head with positional inputs: ``(dense, text, guidance_0, ...)`` ->
    logits at the head's resolution (before the sigmoid and the resize to the image)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, dense: torch.Tensor, text: torch.Tensor, *guidance: torch.Tensor):
        return self.head(dict(dense=dense, guidance=list(guidance), text=text))


class TextEncoder(nn.Module):
    """The (merged) CLIP text tower: tokens [M, L] -> L2-normalised embeddings [M, C].

    ``L`` is dynamic: the runtime cuts the zero-padded tokens after the last end token
    (as :meth:`HCLIPBackbone.encode_text` does in PyTorch - with the causal mask and
    end-token pooling the later positions cannot change the result - several times less
    work for short prompts). The cut itself is data-dependent, so it happens outside the
    graph; inside, the positional embedding and the causal mask are sliced to ``L``.
    """

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, tokens: torch.Tensor):
        from open_clip.transformer import text_global_pool
        clip = self.clip
        length = tokens.shape[1]
        x = clip.token_embedding(tokens) + clip.positional_embedding[:length]
        mask = None if clip.attn_mask is None else clip.attn_mask[:length, :length]
        x = clip.transformer(x, attn_mask=mask)
        x = clip.ln_final(x)
        x = text_global_pool(x, tokens, clip.text_pool_type,
                             eos_token_id=getattr(clip, 'text_eos_id', None))
        proj = clip.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        return F.normalize(x, dim=-1)


def _window_reverse(windows: torch.Tensor, H: int, W: int, window_size: int) -> torch.Tensor:
    """mmpretrain's ``ShiftWindowMSA.window_reverse`` with the batch size computed in
    integers: ``windows.shape[0] // (H // ws * W // ws)`` instead of
    ``int(windows.shape[0] / (H * W / ws / ws))`` (the same number; the float division made
    torch.export fix the batch and class counts to the example's)."""
    batch = windows.shape[0] // ((H // window_size) * (W // window_size))
    x = windows.view(batch, H // window_size, W // window_size, window_size, window_size, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(batch, H, W, -1)


@contextlib.contextmanager
def export_friendly(module: Optional[nn.Module] = None):
    """Within the block, code that torch.export cannot trace with dynamic shapes is
    replaced by exact equivalents, and restored afterwards:

    * mmpretrain's ``ShiftWindowMSA.window_reverse`` (see :func:`_window_reverse`);
    * a head with an ``impl`` switch runs ``impl='reference'`` (the ``'fast'`` decoder
      uses a custom autograd function with an in-place update, which torch.export
      refuses; both give the same numbers up to float rounding).
    """
    from mmpretrain.models.utils.attention import ShiftWindowMSA
    saved = ShiftWindowMSA.__dict__['window_reverse']
    ShiftWindowMSA.window_reverse = staticmethod(_window_reverse)
    impls = []
    if module is not None:
        impls = [(m, 'fast') for m in module.modules() if getattr(m, 'impl', None) == 'fast']
    try:
        for m, _ in impls:
            m.impl = 'reference'
        yield
    finally:
        ShiftWindowMSA.window_reverse = saved
        for m, value in reversed(impls):
            m.impl = value


# ------------------------------------------------------------------------- model
def merge_for_export(model):
    """Fold the adapter into the CLIP weights and drop it (in place); returns ``model``.

    Afterwards the CLIP parameters are the merged weights and nothing can unmerge them
    (``state_dict()``, which the exporter calls, unmerges a merged adapter).

    Raises:
        ValueError: Merging gave non-finite weights (a diverged checkpoint).
    """
    model.eval()
    backbone = model.backbone
    if getattr(backbone, 'adapter', None) is not None:
        backbone.merge()
        bad = [n for n, p in backbone.clip.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise ValueError(f'merging the adapter gave non-finite weights in {bad[:3]}: the '
                             'checkpoint has diverged; export an earlier one.')
        backbone.adapter = None  # the CLIP parameters are now the merged weights
        backbone._bump()
    return model


def load_merged_model(config: str, checkpoint: str, cfg_options: Optional[dict] = None):
    """The segmentor with the adapter folded into the CLIP weights and removed.

    A merged checkpoint (tools/merge_weights.py) is loaded as it is; a training checkpoint
    is merged in memory (:func:`merge_for_export`).
    """
    model = init_model(config, checkpoint, device='cpu', cfg_options=cfg_options)
    return merge_for_export(model)


def _pair(v) -> List[int]:
    return [int(v), int(v)] if isinstance(v, int) else [int(x) for x in v]


def deploy_meta(model, config: str, checkpoint: str, opset: Optional[int]) -> dict:
    """What onnx_demo.py needs besides the graphs."""
    from mmseg_hclip.models.necks.text_embedding_neck import HCLIPTextNeck
    backbone, head, neck = model.backbone, model.decode_head, model.neck
    if not isinstance(neck, HCLIPTextNeck):
        raise ValueError(f'export supports the HCLIPTextNeck, not {type(neck).__name__}')
    tok = backbone.tokenizer
    clean = getattr(getattr(tok, 'clean_fn', None), '__name__', '')
    if type(tok).__name__ != 'SimpleTokenizer' or clean != '_clean_lower' or getattr(
            tok, 'reduction_fn', None) is not None:
        raise ValueError(f'the model\'s tokenizer ({type(tok).__name__}, clean={clean!r}) is '
                         "not CLIP's standard SimpleTokenizer with lower-case cleaning; the "
                         'torch-free tokenizer of tools/deploy cannot reproduce it.')
    pre = model.data_preprocessor
    test_cfg = dict(model.test_cfg)
    size = _pair(backbone.img_size)
    return dict(
        format_version=1,
        config=osp.abspath(config),
        checkpoint=osp.abspath(checkpoint),
        exported=time.strftime('%Y-%m-%d %H:%M:%S'),
        torch=torch.__version__,
        opset=opset,
        image_size=size,  # [H, W]
        mean=[float(v) for v in pre.mean.flatten()],
        std=[float(v) for v in pre.std.flatten()],
        bgr_to_rgb=bool(getattr(pre, 'channel_conversion', True)),
        num_guidance=len(backbone.guidance_layers),
        embed_dim=int(backbone.embed_dim),
        context_length=int(backbone.clip.context_length),
        templates=list(neck.templates),
        synonyms=neck.synonyms,
        pad_len=int(head.pad_len),
        prompt_channels=int(head.prompt_channels),
        align_corners=bool(head.align_corners),
        # 'whole' mode: the segmentor takes the sigmoid at the head's resolution and resizes
        # the scores to the image in one step (the reference's order) when it has this
        # switch; otherwise MMSeg's order (logits resized to the view, sigmoid, resized)
        sigmoid_before_resize=bool(hasattr(model, '_sigmoid_before_resize')
                                   and model._sigmoid_before_resize()),
        test_cfg=dict(
            mode=test_cfg.get('mode', 'whole'),
            resize_to=_pair(test_cfg.get('resize_to', (640, 640))),
            crop_size=_pair(test_cfg.get('crop_size', (384, 384))),
            stride=_pair(test_cfg.get('stride', (256, 256)))),
        files={k: v for k, v in FILES.items() if k != 'meta'},
    )


# ------------------------------------------------------------------------ export
def _export(module: nn.Module, args: tuple, path: str, input_names: Sequence[str],
            output_names: Sequence[str], dynamic_shapes, opset: Optional[int]) -> None:
    with warnings.catch_warnings(), export_friendly(module):
        warnings.simplefilter('ignore')
        program = torch.onnx.export(module, args, dynamo=True, input_names=list(input_names),
                                    output_names=list(output_names),
                                    dynamic_shapes=dynamic_shapes, opset_version=opset,
                                    optimize=True, verbose=False, report=False)
    program.save(path, external_data=False)


def example_inputs(model, batch: int = 1, num_classes: int = 3, seed: int = 0):
    """Random inputs of the right shapes: image, (dense, guidance) and text features."""
    backbone, head = model.backbone, model.decode_head
    g = torch.Generator().manual_seed(seed)
    h, w = _pair(backbone.img_size)
    image = torch.randn(batch, 3, h, w, generator=g)
    with torch.no_grad():
        feats = backbone(image)
    text = F.normalize(torch.randn(num_classes, head.prompt_channels, backbone.embed_dim,
                                   generator=g), dim=-1)
    return image, feats['dense'], list(feats['guidance']), text


def export_all(model, out_dir: str, opset: Optional[int] = None,
               log=print) -> Dict[str, str]:
    """Write the three (four) graphs of ``model`` (merged, eval) into ``out_dir``."""
    from torch.export import Dim
    os.makedirs(out_dir, exist_ok=True)
    backbone, head = model.backbone, model.decode_head
    pad_len = int(head.pad_len)
    ng = len(backbone.guidance_layers)
    g_names = [f'guidance_{i}' for i in range(ng)]
    paths = {k: osp.join(out_dir, v) for k, v in FILES.items()}
    batch = Dim('batch', min=1, max=1024)

    t0 = time.perf_counter()
    image, dense, guidance, _ = example_inputs(model, batch=2)
    _export(ImageEncoder(backbone).eval(), (image, ), paths['image'], ['image'],
            ['dense'] + g_names, ({0: batch}, ), opset)
    log(f'  image side  -> {paths["image"]}  ({time.perf_counter() - t0:.1f} s)')

    ranges = {'head': (1, pad_len)} if pad_len > 0 else {'head': (1, 100000)}
    if pad_len > 0:
        ranges['head_topk'] = (pad_len + 1, 100000)
    for key, (lo, hi) in ranges.items():
        t0 = time.perf_counter()
        # an example strictly inside the range; the class axis spans [lo, hi]
        n_example = max(lo + 1, 2) if hi - lo >= 2 else lo
        n_example = min(n_example, hi)
        text = F.normalize(torch.randn(n_example, head.prompt_channels, backbone.embed_dim),
                           dim=-1)
        classes = Dim(f'classes_{key}', min=max(lo, 2) if key == 'head' else lo,
                      max=hi - 1 if key == 'head' and pad_len > 0 else hi)
        shapes = ({0: batch}, {0: classes}, tuple({0: batch} for _ in range(ng)))  # *guidance
        _export(HeadWrapper(head).eval(), (dense, text, *guidance), paths[key],
                ['dense', 'text'] + g_names, ['logits'], shapes, opset)
        log(f'  head ({lo}..{hi if hi < 100000 else "any"} classes) -> {paths[key]}  '
            f'({time.perf_counter() - t0:.1f} s)')

    t0 = time.perf_counter()
    tokens = backbone.tokenize(['a photo of a cat.', 'a photo of a dog in the scene.',
                                'sky']).cpu()[:, :12]
    length = Dim('length', min=2, max=int(backbone.clip.context_length))
    _export(TextEncoder(backbone.clip).eval(), (tokens, ), paths['text'], ['tokens'],
            ['text'], ({0: Dim('prompts', min=1, max=100000), 1: length}, ), opset)
    log(f'  text side   -> {paths["text"]}  ({time.perf_counter() - t0:.1f} s)')

    from open_clip.tokenizer import default_bpe
    shutil.copyfile(default_bpe(), paths['bpe'])
    return {k: p for k, p in paths.items() if k != 'meta' and osp.isfile(p)}


# ------------------------------------------------------------------------- check
def cut_tokens(tokens: np.ndarray) -> np.ndarray:
    """Zero-padded token ids [M, 77] -> [M, L], cut after the last end token of the batch
    (the end token has the largest id; what the runtime feeds the text graph)."""
    length = int(tokens.argmax(axis=1).max()) + 1 if tokens.size else tokens.shape[1]
    return np.ascontiguousarray(tokens[:, :max(length, 2)])


def check_export(model, out_dir: str, class_counts: Sequence[int] = (), seed: int = 1,
                 threads: int = 0) -> Dict[str, float]:
    """Largest |onnxruntime - PyTorch| of every graph on random inputs.

    Image side at batch 1 and 2; head at every class count in ``class_counts`` (default:
    1, pad_len - 1, pad_len, pad_len + 1, 2 * pad_len + 3); text side on real prompts.

    Returns:
        dict: ``'image'``, ``'text'`` and ``'head_N'`` -> max abs difference.
    """
    import onnxruntime as ort
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads

    def session(name):
        return ort.InferenceSession(osp.join(out_dir, FILES[name]), opts,
                                    providers=['CPUExecutionProvider'])

    backbone, head = model.backbone, model.decode_head
    pad_len = int(head.pad_len)
    if not class_counts:
        class_counts = sorted({1, max(pad_len - 1, 1), max(pad_len, 1), pad_len + 1,
                               2 * pad_len + 3})
    diffs = {}
    img_sess = session('image')
    for batch in (1, 2):
        image, dense, guidance, _ = example_inputs(model, batch=batch, seed=seed + batch)
        outs = img_sess.run(None, {'image': image.numpy()})
        ref = [dense] + guidance
        diffs[f'image_b{batch}'] = max(float(np.abs(o - r.numpy()).max())
                                       for o, r in zip(outs, ref))
    heads = {'head': session('head')}
    if pad_len > 0:
        heads['head_topk'] = session('head_topk')
    image, dense, guidance, _ = example_inputs(model, batch=2, seed=seed)
    g = torch.Generator().manual_seed(seed)
    for n in class_counts:
        text = F.normalize(torch.randn(n, head.prompt_channels, backbone.embed_dim,
                                       generator=g), dim=-1)
        with torch.no_grad():
            ref = head(dict(dense=dense, guidance=guidance, text=text)).numpy()
        key = 'head_topk' if 0 < pad_len < n else 'head'
        feed = {'dense': dense.numpy(), 'text': text.numpy()}
        feed.update({f'guidance_{i}': x.numpy() for i, x in enumerate(guidance)})
        out = heads[key].run(None, feed)[0]
        if out.shape != ref.shape:
            raise AssertionError(f'{key} with {n} classes: shape {out.shape} vs {ref.shape}')
        diffs[f'head_{n}'] = float(np.abs(out - ref).max())
    prompts = ['A photo of a cat in the scene', 'sky', 'A photo of a traffic light in the '
               'scene', 'ünïcode café', 'x' * 300]
    tokens = backbone.tokenize(prompts).cpu()
    with torch.no_grad():
        ref = F.normalize(backbone.encode_text(tokens), dim=-1).numpy()
    text_sess = session('text')
    for name, cut in (('text', cut_tokens(tokens.numpy())), ('text_full', tokens.numpy())):
        diffs[name] = float(np.abs(text_sess.run(None, {'tokens': cut})[0] - ref).max())
    return diffs


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='training or merged (tools/merge_weights.py) '
                        'checkpoint')
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--opset', type=int, default=None,
                        help='ONNX opset (default: the exporter\'s recommended one)')
    parser.add_argument('--no-check', action='store_true',
                        help='skip the onnxruntime-vs-PyTorch check after the export')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='largest accepted |onnxruntime - PyTorch| (default 1e-4)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        model = load_merged_model(args.config, args.checkpoint, args.cfg_options)
        meta = deploy_meta(model, args.config, args.checkpoint, args.opset)
    except (OSError, ValueError) as err:
        raise SystemExit(f'tools/deploy/export_onnx.py: error: {err}') from None
    print(f'exporting {args.config} + {args.checkpoint} (merged) to {args.out}')
    with torch.no_grad():
        paths = export_all(model, args.out, args.opset)
    with open(osp.join(args.out, FILES['meta']), 'w') as f:
        json.dump(meta, f, indent=2)
    if not args.no_check:
        diffs = check_export(model, args.out)
        worst = max(diffs.values())
        print('max |onnxruntime - PyTorch|: '
              + ', '.join(f'{k} {v:.2e}' for k, v in diffs.items()))
        if worst > args.tolerance:
            raise SystemExit(f'tools/deploy/export_onnx.py: error: onnxruntime differs from '
                             f'PyTorch by {worst:.2e} > --tolerance {args.tolerance:g}')
    for key, path in paths.items():
        print(f'{key:10s} {path}  {osp.getsize(path) / 2**20:.1f} MiB')
    return paths


if __name__ == '__main__':
    main()
