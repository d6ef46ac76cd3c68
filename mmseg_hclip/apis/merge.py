# Copyright (c) mmseg_hclip contributors. Licensed under the Apache License 2.0.
"""Fold the H-CLIP adapter into the CLIP weights of a checkpoint (``tools/merge_weights.py``).

The merged checkpoint has the same keys as the training checkpoint minus
``backbone.adapter.*``; its ``meta`` carries ``hclip_merged=True``, so
:func:`mmseg_hclip.apis.init_model` (and ``tools/demo.py``) build the config's model without
adapter when they load it. Inference then costs exactly what plain CLIP costs.

The CLIP alone is exported as a plain open_clip state dict plus an open_clip model-config
JSON (the architecture at the size it was trained at, with its activation), so any open_clip
user can load the tuned CLIP::

    import open_clip
    open_clip.add_model_config('merged_open_clip.json')   # registers 'merged_open_clip'
    clip = open_clip.create_model('merged_open_clip', pretrained='merged_open_clip.pth')
"""
import copy
import json
import os
import os.path as osp
from pathlib import Path
from typing import Dict, Optional, Union

import torch
import torch.nn as nn
from mmengine.config import Config

from .inference import (MERGED_META_KEY, _load_config, build_model_from_state,
                        is_merged_checkpoint, read_checkpoint)

__all__ = ['merge_checkpoint', 'open_clip_model_config', 'open_clip_paths',
           'open_clip_state_dict']


def open_clip_paths(out: str, open_clip_out: Optional[str] = None) -> Dict[str, str]:
    """Where the open_clip state dict and its model-config JSON go.

    ``work_dirs/x.pth`` -> ``work_dirs/x_open_clip.pth`` and ``work_dirs/x_open_clip.json``
    (open_clip registers a config JSON under its file stem, here ``x_open_clip``).
    """
    if open_clip_out is None:
        root, _ = osp.splitext(out)
        open_clip_out = root + '_open_clip.pth'
    root, _ = osp.splitext(open_clip_out)
    return dict(state_dict=open_clip_out, config=root + '.json')


def _uses_quick_gelu(clip: nn.Module) -> bool:
    from open_clip.transformer import QuickGELU
    return any(isinstance(m, QuickGELU) for m in clip.modules())


def open_clip_model_config(backbone) -> dict:
    """The open_clip model config (``open_clip.CLIP(**cfg)``) of an ``HCLIPBackbone``'s CLIP.

    The architecture (named or inline) with ``vision_cfg.image_size`` set to the backbone's
    ``img_size`` and ``quick_gelu`` as used, so that ``open_clip.CLIP(**cfg)`` loads
    :func:`open_clip_state_dict` exactly.
    """
    import open_clip
    arch = backbone.arch
    if isinstance(arch, str):
        cfg = copy.deepcopy(open_clip.get_model_config(arch))
    else:
        cfg = copy.deepcopy(dict(arch))
    cfg = json.loads(json.dumps(cfg, default=list))  # plain dicts/lists (ConfigDict, tuples)
    cfg.pop('custom_text', None)
    cfg['vision_cfg']['image_size'] = list(backbone.img_size)
    cfg['quick_gelu'] = _uses_quick_gelu(backbone.clip)
    return cfg


def open_clip_state_dict(backbone) -> Dict[str, torch.Tensor]:
    """The CLIP's state dict with the positional embedding the backbone uses at its
    ``img_size`` (the stored one resized by its ``pos_embed_resize`` rule), so that an
    open_clip CLIP built at that size computes what the backbone computes."""
    state = dict(backbone.clip.state_dict())
    with torch.no_grad():
        state['visual.positional_embedding'] = backbone.pos_embed_for().detach().clone()
    return state


def _atomic_save(obj, path: str) -> None:
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = path + '.tmp'
    torch.save(obj, tmp)
    os.replace(tmp, path)


def merge_checkpoint(config: Union[str, Path, Config],
                     checkpoint: str,
                     out: str,
                     open_clip_out: Optional[str] = None,
                     cfg_options: Optional[dict] = None) -> Dict[str, str]:
    """Write a merged checkpoint and an open_clip export of its CLIP.

    Args:
        config (str | Path | Config): The config the checkpoint was trained with.
        checkpoint (str): A training checkpoint (adapter parameters + pretrained CLIP).
        out (str): The merged checkpoint to write.
        open_clip_out (str, optional): The open_clip state dict to write; default ``out``
            with the suffix ``_open_clip.pth`` (the config JSON beside it, ``.json``).
        cfg_options (dict, optional): Overrides merged into the config.

    Returns:
        dict: Paths written: ``checkpoint``, ``open_clip`` and ``open_clip_config``.

    Raises:
        FileNotFoundError: Missing config or checkpoint.
        CheckpointMismatchError: The checkpoint does not fit the config's model.
        ValueError: An already merged checkpoint, a config without adapter, or non-finite
            merged weights (nothing is written then).
    """
    paths = open_clip_paths(out, open_clip_out)
    for p in (out, paths['state_dict'], paths['config']):
        if osp.abspath(p) == osp.abspath(checkpoint):
            raise ValueError(f'the output {p!r} would overwrite the input checkpoint; choose '
                             'another OUT.')
    cfg = _load_config(config, cfg_options)
    state_dict, meta = read_checkpoint(checkpoint)
    if is_merged_checkpoint(meta):
        raise ValueError(f'checkpoint {checkpoint!r} is already merged (meta '
                         f'{MERGED_META_KEY}=True); use it directly, or merge the training '
                         'checkpoint it came from.')
    adapter_cfg = cfg.model.get('backbone', {}).get('adapter', None)
    model = build_model_from_state(cfg, state_dict, meta, source=f'checkpoint {checkpoint!r}')
    model.eval()
    backbone = model.backbone
    if getattr(backbone, 'adapter', None) is None:
        raise ValueError('the config builds no adapter (model.backbone.adapter is None): the '
                         'CLIP weights of this checkpoint are already plain, there is nothing '
                         'to merge.')
    try:
        backbone.adapter.merge(backbone.clip, keep_original=False)
    except ValueError as err:
        raise ValueError(f'cannot merge checkpoint {checkpoint!r}: {err} Nothing was '
                         'written; check the training run (diverged?).') from None
    backbone.adapter = None  # the CLIP weights are now the adapted ones
    backbone._bump()

    merged_meta = dict(meta)
    merged_meta.update({
        MERGED_META_KEY: True,
        'hclip_merged_from': osp.basename(checkpoint),
        'hclip_adapter': (adapter_cfg.to_dict() if hasattr(adapter_cfg, 'to_dict') else
                          dict(adapter_cfg)),
        'open_clip_config': open_clip_model_config(backbone),
    })
    merged_meta['hclip_adapter'] = json.loads(json.dumps(merged_meta['hclip_adapter'],
                                                         default=list))
    _atomic_save({'meta': merged_meta, 'state_dict': model.state_dict()}, out)
    _atomic_save(open_clip_state_dict(backbone), paths['state_dict'])
    with open(paths['config'], 'w', encoding='utf-8') as f:
        json.dump(merged_meta['open_clip_config'], f, indent=2)
    return dict(checkpoint=out, open_clip=paths['state_dict'], open_clip_config=paths['config'])
