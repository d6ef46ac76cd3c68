"""Convert a checkpoint trained with the H-CLIP authors' code to our official-compat config.

The authors' code (a CAT-Seg fork, detectron2) adds to every attention block of both CLIP
towers references to three shared parameters, so a checkpoint holds 24 copies of each:

* ``...resblocks.{i}.attn_q_proj_oft_layer_R``: the block tensor ``T``, ``[q, q, M, S]`` =
  ``[128, 128, 48, 10]``; ``T[:, :, m, s]`` is block ``s`` of position ``m = 4·layer +
  target`` (targets q, k, v, out_proj), text blocks ``s < 4`` (512 / 128) first, then the
  image blocks (768 / 128). Text slices are Cayley generators (``(I - Q)(I + Q)^-1`` of the
  skew part), image slices the blocks themselves.
* ``...attn_q_proj_oft_relation_l_R.weight``: the ``48 × 48`` mode-4 map ``S4``;
* ``...attn_q_proj_oft_relation_m_R.{j}.weight``: twelve ``10 × 10`` mode-3 maps ``S3[j]``
  (layer ``j``'s blocks mix mode 3 with the map of layer ``j``, the destination).

plus two scalar buffers per OFT layer (``to_qkv_oft[_vision]``, ``to_out_oft[_vision]``:
``cross_attention_dim``, ``hidden_size``, the tower width), the CLIP (``in_proj_weight``
unsplit) and CAT-Seg's head. Our ``HCLIPAdapter`` stores ``T`` as ``[M, S, q, q]`` split per
tower (``generators.text``: the orthogonal text tower's generators; ``blocks.image``) and
the maps as ``dcrc.s3`` ``[12, 10, 10]`` and ``dcrc.s4``, with the same meaning
(``configs/hclip_vitb16_coco-stuff_official.py``: ``sides='official'``, ``dcrc='linear'``,
``dcrc_per_layer=True``, ``cayley_convention='official'``)::

    python tools/model_converters/hclip_official2mmseg.py model_final.pth work_dirs/hclip.pth
    bash tools/dist_test.sh configs/hclip_vitb16_ade150.py work_dirs/hclip.pth 4 \\
        --cfg-options model.backbone.adapter.sides=official model.backbone.adapter.dcrc=linear \\
        model.backbone.adapter.dcrc_per_layer=True model.backbone.adapter.cayley_convention=official

Every source key is mapped exactly once (the shared copies must be equal); unknown or
missing keys are an error listing them; the result must load strictly into the model of
``--config``.
"""
import argparse
import os.path as osp
import re
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

import torch  # noqa: E402

from _key_mapping import (CLIP_PREFIX, ConversionError, KeyMapper,  # noqa: E402
                     consume_pixel_stats, finish_and_save, map_catseg_head, map_clip,
                     read_source, run_cli)

DEFAULT_CONFIG = 'configs/hclip_vitb16_coco-stuff_official.py'
_OFT = 'attn_q_proj_oft_'
#: OFT layer modules of the authors' blocks and their two scalar buffers
_OFT_LAYERS = {'visual.': ('to_qkv_oft_vision', 'to_out_oft_vision'),
               '': ('to_qkv_oft', 'to_out_oft')}


def _block_indices(mapper: KeyMapper, tower: str):
    regex = re.compile(re.escape(f'{CLIP_PREFIX}{tower}transformer.resblocks.') + r'(\d+)\.')
    return sorted({int(m.group(1)) for k in mapper.source for m in [regex.match(k)] if m})


def map_oft(mapper: KeyMapper, adapter, widths) -> None:
    """The authors' OFT/DCRC parameters -> ``backbone.adapter.*`` (see the module docstring).

    Args:
        mapper (KeyMapper): Holds the source state dict.
        adapter (HCLIPAdapter): The target adapter (its shapes and tower order).
        widths (dict): tower prefix ('visual.' or '') -> width, for the scalar buffers.
    """
    from mmseg_hclip.peft.adapter import DCRC_TOWER_ORDER
    tensors, l_maps, m_maps = [], [], {}
    for tower, layers in _OFT_LAYERS.items():
        for i in _block_indices(mapper, tower):
            base = f'{CLIP_PREFIX}{tower}transformer.resblocks.{i}.'
            tensors.append(base + _OFT + 'layer_R')
            l_maps.append(base + _OFT + 'relation_l_R.weight')
            for key in mapper.keys(base + _OFT + 'relation_m_R.'):
                match = re.match(re.escape(base + _OFT) + r'relation_m_R\.(\d+)\.weight$', key)
                if match:
                    m_maps.setdefault(int(match.group(1)), []).append(key)
            for layer in layers:
                for name in ('cross_attention_dim', 'hidden_size'):
                    value = mapper.take(f'{base}{layer}.{name}')
                    if value is not None and int(value) != widths[tower]:
                        raise ConversionError(
                            f'{mapper.name}: {base}{layer}.{name} = {int(value)}, expected the '
                            f'tower width {widths[tower]}')
    T = mapper.take_shared(tensors, 'the OFT block tensor (attn_q_proj_oft_layer_R)')
    S4 = mapper.take_shared(l_maps, 'the mode-4 map (attn_q_proj_oft_relation_l_R)')
    S3 = [mapper.take_shared(m_maps[j], f'the mode-3 map {j} (attn_q_proj_oft_relation_m_R)')
          for j in sorted(m_maps)]
    if T is None or S4 is None or not S3:
        return  # recorded as missing by the mapper
    if sorted(m_maps) != list(range(len(m_maps))):
        raise ConversionError(f'{mapper.name}: mode-3 maps {sorted(m_maps)} are not 0..n-1')
    q = adapter.block_size
    M, S = adapter.num_positions, adapter.num_slices
    if tuple(T.shape) != (q, q, M, S):
        raise ConversionError(
            f'{mapper.name}: the OFT block tensor is {tuple(T.shape)}; the adapter of the '
            f'config needs [q, q, M, S] = {[q, q, M, S]} (block size {q}, {M} positions, '
            f'{S} slices)')
    if adapter.dcrc is None or adapter.dcrc_variant != 'linear':
        raise ConversionError('the target config must use the linear DCRC with per-layer '
                              "mode-3 maps (dcrc='linear', dcrc_per_layer=True)")
    s3 = adapter.dcrc.s3
    if s3.dim() != 3 or s3.shape[0] != len(S3) or tuple(S4.shape) != (M, M):
        raise ConversionError(
            f'{mapper.name}: {len(S3)} mode-3 maps and a {tuple(S4.shape)} mode-4 map do not fit '
            f'the adapter (dcrc.s3 {tuple(s3.shape)}, dcrc.s4 {(M, M)}); use '
            'dcrc_per_layer=True')
    stored = T.permute(2, 3, 0, 1)  # [M, S, q, q]: stored[m, s] = T[:, :, m, s]
    start = 0
    for name in DCRC_TOWER_ORDER:
        b = adapter.towers[name].width // q
        kind = 'generators' if name in adapter.orthogonal_towers else 'blocks'
        mapper.put(f'backbone.adapter.{kind}.{name}', stored[:, start:start + b].contiguous())
        start += b
    mapper.put('backbone.adapter.dcrc.s3', torch.stack(S3))
    mapper.put('backbone.adapter.dcrc.s4', S4)


def _check_target_config(cfg) -> None:
    adapter = cfg.model.backbone.get('adapter') or {}
    wanted = dict(sides='official', dcrc='linear', dcrc_per_layer=True,
                  cayley_convention='official', orthogonal='text')
    wrong = {k: adapter.get(k) for k, v in wanted.items() if adapter.get(k) != v}
    if wrong:
        raise ConversionError(
            f'the target config\'s adapter has {wrong}; the authors\' code computes '
            f'{wanted}: use {DEFAULT_CONFIG} (or a config derived from it)')


def convert(src: str, out: str, config: str = None) -> dict:
    """Convert ``src`` to ``out``; return ``dict(config=..., num_keys=...)``."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import mmseg_hclip  # noqa: F401
    config = config or osp.join(ROOT, DEFAULT_CONFIG)
    cfg = Config.fromfile(config)
    _check_target_config(cfg)
    source = read_source(src)
    mapper = KeyMapper(source, src)
    # the target adapter, built on the config's CLIP architecture (random weights, no download)
    backbone_cfg = dict(cfg.model.backbone, pretrained=None, init_cfg=None)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    backbone = MODELS.build(backbone_cfg)
    widths = {'visual.': backbone.width, '': backbone.text_width}
    map_clip(mapper)
    map_oft(mapper, backbone.adapter, widths)
    masks = map_catseg_head(mapper)
    consume_pixel_stats(mapper, cfg)
    del backbone
    return finish_and_save(mapper, masks, config, src, out,
                           converted_from="H-CLIP authors' code (detectron2)",
                           converter='tools/model_converters/hclip_official2mmseg.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Convert a checkpoint of the H-CLIP authors' code to an MMSeg checkpoint "
        f'of {DEFAULT_CONFIG}')
    parser.add_argument('src', help="checkpoint written by the authors' train_net.py")
    parser.add_argument('out', help='converted checkpoint to write (.pth)')
    parser.add_argument('--config', default=None,
                        help=f'target config (default: {DEFAULT_CONFIG})')
    return parser.parse_args(argv)


def main(argv=None):
    run_cli(convert, parse_args(argv))


if __name__ == '__main__':
    main()
