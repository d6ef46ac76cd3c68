"""Reject ``--cfg-options`` keys that nothing would read (mmengine merges any key silently).

``tools/train.py`` and ``tools/test.py`` call :func:`check_cfg_options` on the config before
merging the options, so a misspelt key fails with the list of keys that exist there.
"""
import inspect
from typing import Mapping

from mmengine.config import Config

__all__ = ['check_cfg_options']


def _accepts(cls, name: str) -> bool:
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return True
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _registered_class(type_name, registries):
    if not isinstance(type_name, str):
        return type_name if inspect.isclass(type_name) else None
    for registry in registries:
        cls = registry.get(type_name)
        if cls is not None:
            return cls
    return None


def check_cfg_options(cfg: Config, options: Mapping) -> None:
    """Raise KeyError for an option whose key is in no config dict and no constructor.

    A key path is accepted when it exists in ``cfg``; or when its first missing part is added to
    a dict with a registered ``type`` whose constructor takes that name (or ``**kwargs``); or
    when it is a new top-level key that ``mmengine.runner.Runner`` accepts (``randomness``, ...).
    Lists are addressed by index (``a.0.b``), as mmengine's merge does.
    """
    import mmengine.registry as mm_registries
    import mmseg.registry as seg_registries
    from mmengine.registry import Registry
    from mmengine.runner import Runner
    registries = [r for mod in (seg_registries, mm_registries) for r in vars(mod).values()
                  if isinstance(r, Registry)]
    for full_key in options:
        node, parts = cfg._cfg_dict, full_key.split('.')
        for depth, part in enumerate(parts):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            if isinstance(node, Mapping) and part in node:
                node = node[part]
                continue
            where = '.'.join(parts[:depth]) or 'the config'
            if depth == 0 and _accepts(Runner, part):
                break
            if isinstance(node, Mapping) and 'type' in node:
                cls = _registered_class(node['type'], registries)
                if cls is None or _accepts(cls, part):
                    break
                known = sorted(p for p in inspect.signature(cls.__init__).parameters
                               if p not in ('self', 'args', 'kwargs'))
                raise KeyError(f'--cfg-options {full_key}: {cls.__name__} ({where}) takes no '
                               f'argument {part!r}; it takes {known}')
            known = sorted(node) if isinstance(node, Mapping) else f'a {type(node).__name__}'
            raise KeyError(f'--cfg-options {full_key}: {where} has no key {part!r} (it has '
                           f'{known}). Check the spelling against the printed config.')
