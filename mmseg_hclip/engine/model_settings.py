# Copyright (c) mmseg_hclip contributors. Licensed under the Apache License 2.0.
"""The model settings that give a checkpoint's weights their meaning, recorded and checked.

Keys and shapes do not say how the weights are used: the same adapter parameters are read as
Cayley generators with ``orthogonal='text'`` and as raw blocks with ``orthogonal='none'``, with
the paper's or the authors' Cayley sign, on the input or the output side, mixed by one or another
DCRC; the prompt templates, the guidance layers, QuickGELU and the head's class padding change
what the rest of the weights compute. A checkpoint evaluated under other settings loads without
a word and scores wrong (issue 12: mIoU 3.00 instead of 18.90).

So every checkpoint records these settings in ``meta[SETTINGS_META_KEY]``
(:class:`~mmseg_hclip.engine.hooks.ModelSettingsHook` on save, ``tools/merge_weights.py`` keeps
the record), and every loader (``tools/test.py``, ``tools/demo.py``,
:func:`mmseg_hclip.apis.init_model`, ``tools/train.py --resume``, the hook on load) compares the
record with the model built from the config: a difference is refused with each key, both values
and the ``--cfg-options`` that match the checkpoint. A checkpoint without a record (written
before records existed) loads with a warning.

The settings are read from the *built* model (defaults resolved, presets expanded), keyed by the
config path under ``model`` (``'backbone.adapter.orthogonal'``).
"""
import json
import re
import warnings
from typing import Any, Dict, List, Mapping, Optional

from torch import nn

__all__ = [
    'SETTINGS_META_KEY', 'ModelSettingsMismatchError', 'model_settings',
    'compare_model_settings', 'check_model_settings', 'cfg_option'
]

#: ``meta`` key of the record (a flat dict: config path under ``model`` -> value)
SETTINGS_META_KEY = 'hclip_model_settings'
_MERGED_META_KEY = 'hclip_merged'  # = mmseg_hclip.apis.inference.MERGED_META_KEY
_ADAPTER = 'backbone.adapter'
_WARNED = set()


class ModelSettingsMismatchError(ValueError):
    """A checkpoint was written under other model settings than the config builds."""


def _plain(value: Any) -> Any:
    """JSON-like value (tuples -> lists), so that a record survives saving unchanged."""
    return json.loads(json.dumps(value, default=list))


def _unwrap(model: nn.Module) -> nn.Module:
    """The segmentor inside DDP/FSDP wrappers and ``SegTTAModel``."""
    while isinstance(getattr(model, 'module', None), nn.Module):
        model = model.module
    return model


def _uses_quick_gelu(clip: nn.Module) -> bool:
    from open_clip.transformer import QuickGELU
    return any(isinstance(m, QuickGELU) for m in clip.modules())


def _neck_templates(neck) -> Any:
    """A template preset's name when the templates are one, else the list."""
    templates = tuple(neck.templates)
    for name in ('single', 'imagenet80'):
        try:
            if tuple(type(neck)._resolve_templates(name)) == templates:
                return name
        except (ValueError, AttributeError, KeyError):
            continue
    return list(templates)


def model_settings(model: nn.Module) -> Dict[str, Any]:
    """The settings of ``model`` that decide what its weights mean.

    Read from the built modules (not from a config), so defaults and presets are resolved:

    * ``backbone``: ``quick_gelu`` (QuickGELU in the CLIP), ``guidance_layers`` and
      ``pos_embed_resize`` (where the backbone has it);
    * ``backbone.adapter``: ``type`` (None without adapter) and, for an adapter with a
      ``weight_settings()`` method (:class:`~mmseg_hclip.peft.HCLIPAdapter`), its settings
      (``block_size``, ``orthogonal``, ``sides``, ``dcrc``, ``cayley_convention``, ...);
    * ``neck``: ``templates`` (a preset name or the list) and ``synonyms``;
    * ``decode_head``: ``pad_len`` (class padding below, top-k selection above it).

    Args:
        model (nn.Module): A segmentor (DDP / TTA wrappers are unwrapped).

    Returns:
        dict: Config path under ``model`` -> JSON-like value, e.g.
        ``{'backbone.adapter.orthogonal': 'text', ...}``; empty for models without these parts.
    """
    model = _unwrap(model)
    out: Dict[str, Any] = {}
    backbone = getattr(model, 'backbone', None)
    if backbone is not None and hasattr(backbone, 'clip'):
        out['backbone.quick_gelu'] = _uses_quick_gelu(backbone.clip)
        if hasattr(backbone, 'guidance_layers'):
            out['backbone.guidance_layers'] = list(backbone.guidance_layers)
        if hasattr(backbone, 'pos_embed_resize'):
            out['backbone.pos_embed_resize'] = backbone.pos_embed_resize
        if hasattr(backbone, 'adapter'):
            adapter = backbone.adapter
            out[f'{_ADAPTER}.type'] = None if adapter is None else type(adapter).__name__
            if adapter is not None and hasattr(adapter, 'weight_settings'):
                for key, value in adapter.weight_settings().items():
                    out[f'{_ADAPTER}.{key}'] = value
    neck = getattr(model, 'neck', None)
    if neck is not None and hasattr(neck, 'templates'):
        out['neck.templates'] = _neck_templates(neck)
        if hasattr(neck, 'synonyms'):
            out['neck.synonyms'] = neck.synonyms
    head = getattr(model, 'decode_head', None)
    if head is not None and hasattr(head, 'pad_len'):
        out['decode_head.pad_len'] = int(head.pad_len)
    return _plain(out)


# ----------------------------------------------------------------------- --cfg-options
_SIMPLE = re.compile(r'^[A-Za-z0-9_.:/+-]+$')


def _option_text(value: Any) -> Optional[str]:
    if value is None or isinstance(value, (bool, int, float)):
        return str(value)
    if isinstance(value, str):
        return value if _SIMPLE.match(value) else None
    if isinstance(value, list):
        parts = [_option_text(v) for v in value]
        if any(p is None for p in parts):
            return None
        return '[' + ','.join(parts) + ']'
    return None


def cfg_option(key: str, value: Any) -> Optional[str]:
    """The ``--cfg-options`` token that sets ``model.<key>`` to ``value``, or None.

    The token is checked to parse back (with mmengine's ``DictAction``) to exactly ``value``;
    values it cannot express (dicts, strings with spaces or commas) give None.
    """
    from mmengine.config import DictAction
    text = _option_text(value)
    if text is None:
        return None
    try:
        parsed = DictAction._parse_iterable(text)
    except (AssertionError, ValueError):
        return None
    if _plain(parsed) != value or type(_plain(parsed)) is not type(value):
        return None
    quoted = f'"{text}"' if isinstance(value, list) else text
    return f'model.{key}={quoted}'


# --------------------------------------------------------------------------- compare
def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:100] + f'... ({len(value)} items)'


def compare_model_settings(recorded: Mapping[str, Any], current: Mapping[str, Any],
                           merged: bool = False) -> List[tuple]:
    """Differences between a checkpoint's record and a model's settings.

    Args:
        recorded (Mapping): ``meta[SETTINGS_META_KEY]`` of the checkpoint.
        current (Mapping): :func:`model_settings` of the model built from the config.
        merged (bool): The checkpoint has its adapter folded into the CLIP weights
            (``tools/merge_weights.py``): the adapter settings no longer apply.

    Returns:
        list[tuple]: ``(key, checkpoint value, config value)`` for every key recorded by both
        that differs; adapter settings are compared only when the adapter types agree.
    """
    recorded, current = _plain(dict(recorded)), _plain(dict(current))
    diffs = []
    adapter_type = f'{_ADAPTER}.type'
    same_adapter = recorded.get(adapter_type) == current.get(adapter_type)
    for key in recorded:
        if key not in current:
            continue
        in_adapter = key.startswith(_ADAPTER + '.')
        if in_adapter and merged:
            continue
        if in_adapter and key != adapter_type and not same_adapter:
            continue
        if recorded[key] != current[key]:
            diffs.append((key, recorded[key], current[key]))
    return diffs


def check_model_settings(model: nn.Module,
                         meta: Optional[Mapping],
                         source: str = 'the checkpoint',
                         target: str = 'the config') -> None:
    """Refuse a checkpoint whose recorded model settings differ from ``model``'s.

    Args:
        model (nn.Module): The segmentor built from the config (wrappers are unwrapped).
        meta (Mapping | None): The checkpoint's ``meta``.
        source (str): How to name the checkpoint in messages.
        target (str): How to name the config in messages.

    Raises:
        ModelSettingsMismatchError: Listing every differing key with both values and the
            ``--cfg-options`` that match the checkpoint.

    Warns:
        UserWarning: The checkpoint records no settings (written before records existed, or
            by a config without ``ModelSettingsHook``): nothing can be checked.
    """
    meta = meta or {}
    recorded = meta.get(SETTINGS_META_KEY)
    current = model_settings(model)
    if not current:  # not an H-CLIP-like model: nothing to compare
        return
    if not isinstance(recorded, Mapping):
        if source in _WARNED:  # once per checkpoint (a tool and the hook may both check)
            return
        _WARNED.add(source)
        warnings.warn(
            f'{source} records no model settings (it was written before checkpoints recorded '
            f'them, or without ModelSettingsHook): cannot check that {target} builds the model it '
            'was trained as. Make sure the adapter, prompt and head settings are the ones it was '
            'trained with; other settings load without error and score wrong.',
            stacklevel=2)
        return
    merged = bool(meta.get(_MERGED_META_KEY, False))
    diffs = compare_model_settings(recorded, current, merged=merged)
    if not diffs:
        return
    lines = [
        f'{source} was trained with other model settings than {target} builds; its weights '
        'would be read differently and score wrong. Differing settings (checkpoint vs config):'
    ]
    options, manual = [], []
    for key, saved, own in diffs:
        lines.append(f'  model.{key}: {_shown(saved)} (checkpoint) vs {_shown(own)} (config)')
        if key == f'{_ADAPTER}.type':
            if saved is None:  # trained without adapter (frozen CLIP)
                options.append('model.backbone.adapter=None')
            else:
                has = 'no adapter' if own is None else f'a {own}'
                manual.append(f'model.backbone.adapter: the checkpoint has a {saved}, the config '
                              f'{has}; use the config it was trained with')
            continue
        option = cfg_option(key, saved)
        if option is None:
            manual.append(f'model.{key} = {saved!r}')
        else:
            options.append(option)
    if options:
        lines.append('Evaluate it with the config it was trained with, or add:')
        lines.append('  --cfg-options ' + ' '.join(options))
    if manual:
        lines.append('Set in the config (not expressible as --cfg-options):' if options else
                     'Use the config it was trained with, or set in the config:')
        lines.extend(f'  {m}' for m in manual)
    raise ModelSettingsMismatchError('\n'.join(lines))
