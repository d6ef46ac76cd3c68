# Copyright (c) mmseg_hclip contributors. Licensed under the Apache License 2.0.
"""Class names x prompt templates -> text embeddings through the tuned CLIP text tower."""
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmseg.registry import MODELS

__all__ = ['HCLIPTextNeck', 'check_vocabulary', 'TEMPLATE_SETS']

#: Named template sets. ``{}`` is replaced by the class name.
TEMPLATE_SETS = {
    # the reference configs (CAT-Seg / H-CLIP)
    'single': ('A photo of a {} in the scene', ),
}


def _imagenet80() -> Tuple[str, ...]:
    """CLIP's 80 ImageNet prompt templates, as shipped by open_clip."""
    from open_clip import OPENAI_IMAGENET_TEMPLATES
    return tuple(t('{}') for t in OPENAI_IMAGENET_TEMPLATES)


def check_vocabulary(class_names) -> Tuple[str, ...]:
    """Validate a vocabulary and return it as a tuple of strings.

    Args:
        class_names (Sequence[str]): Class names; synonyms of one class are
            joined by ``", "`` (``"building, edifice"``).

    Returns:
        tuple[str]: The names.

    Raises:
        ValueError: Empty vocabulary, an empty name, or duplicate names.
        TypeError: A name that is not a string, or a bare string as vocabulary.
    """
    if isinstance(class_names, str):
        raise TypeError(f'The vocabulary must be a list of class names, got the string '
                        f'{class_names!r}; wrap it in a list.')
    if class_names is None:
        raise ValueError('The vocabulary is empty (None); give at least one class name.')
    names = tuple(class_names)
    if not names:
        raise ValueError('The vocabulary is empty; give at least one class name.')
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise TypeError(f'Class name #{i} is {name!r} ({type(name).__name__}); class names '
                            'must be strings.')
        if not name.strip(' ,'):
            raise ValueError(f'Class name #{i} is empty ({name!r}).')
    seen, dups = {}, OrderedDict()
    for i, name in enumerate(names):
        if name in seen:
            dups.setdefault(name, [seen[name]]).append(i)
        else:
            seen[name] = i
    if dups:
        desc = ', '.join(f'{n!r} at {pos}' for n, pos in dups.items())
        raise ValueError(f'Duplicate class names in the vocabulary: {desc}. Every class needs a '
                         'distinct name (merge them, or join synonyms as "name, synonym").')
    return names


@MODELS.register_module()
class HCLIPTextNeck(BaseModule):
    """Text embeddings of a vocabulary through the (tuned) CLIP text tower.

    Every class name is put into every prompt template, tokenised with the
    backbone's open_clip tokenizer and encoded by
    :meth:`HCLIPBackbone.encode_text` with the adapted weights of the current
    forward. In training the embeddings are recomputed on every call (the
    text tower is being tuned). In eval they are cached: the key is the
    vocabulary itself (names, templates, synonym mode) plus the backbone's
    ``weights_version`` (which changes on every training step, merge, unmerge
    and checkpoint load), so another vocabulary in the same process is never
    served a stale cache. Eval embeddings are detached (no gradient to the text tower).

    Args:
        templates (str | Sequence[str]): ``'single'`` (``"A photo of a {} in
            the scene"``, the reference), ``'imagenet80'`` (CLIP's 80 ImageNet
            templates) or a list of templates with one ``{}`` each.
            Defaults to ``'single'``.
        synonyms (str): A class name may list synonyms separated by commas
            (``"building, edifice"``). ``'first'`` uses the first one (the
            reference); ``'average'`` encodes every synonym and averages the
            normalised embeddings per template. Defaults to ``'first'``.
        eval_batch_size (int): Prompts per text-tower call in eval (bounds
            memory for large vocabularies x templates). Training encodes all
            prompts at once. Defaults to 2048.
        cache_size (int): Vocabularies kept in the eval cache. Defaults to 4.
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self,
                 templates: Union[str, Sequence[str]] = 'single',
                 synonyms: str = 'first',
                 eval_batch_size: int = 2048,
                 cache_size: int = 4,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.templates = self._resolve_templates(templates)
        if synonyms not in ('first', 'average'):
            raise ValueError(f"synonyms={synonyms!r}; use 'first' or 'average'.")
        self.synonyms = synonyms
        if eval_batch_size < 1 or cache_size < 0:
            raise ValueError('eval_batch_size must be >= 1 and cache_size >= 0.')
        self.eval_batch_size = int(eval_batch_size)
        self.cache_size = int(cache_size)
        self._cache = OrderedDict()
        self._token_cache = OrderedDict()
        #: number of text-tower passes over a vocabulary (tests and profiling read it)
        self.num_encodes = 0

    @staticmethod
    def _resolve_templates(templates) -> Tuple[str, ...]:
        if isinstance(templates, str):
            if templates == 'imagenet80':
                return _imagenet80()
            if templates in TEMPLATE_SETS:
                return TEMPLATE_SETS[templates]
            raise ValueError(f"templates={templates!r}: use 'single', 'imagenet80' or a list of "
                             "templates such as ['a photo of a {}.'].")
        templates = tuple(templates)
        if not templates:
            raise ValueError('templates is an empty list; give at least one template.')
        for t in templates:
            if not isinstance(t, str) or t.count('{}') != 1:
                raise ValueError(f'Template {t!r} must be a string with exactly one "{{}}" '
                                 'where the class name goes.')
        return templates

    @property
    def num_templates(self) -> int:
        return len(self.templates)

    def split_synonyms(self, name: str) -> List[str]:
        """The names of one class that are encoded (first synonym or all)."""
        parts = [p.strip() for p in name.split(',') if p.strip()]
        return parts[:1] if self.synonyms == 'first' else parts

    def prompts(self, class_names: Sequence[str]) -> Tuple[List[str], List[int]]:
        """All prompts of a vocabulary.

        Returns:
            tuple: the prompts, ordered class-major, then synonym, then
            template (``len = sum(synonyms) * P``), and for each synonym
            group the index of its class.
        """
        prompts, owner = [], []
        for i, name in enumerate(class_names):
            for syn in self.split_synonyms(name):
                prompts.extend(t.replace('{}', syn) for t in self.templates)
                owner.append(i)
        return prompts, owner

    def clear_cache(self):
        self._cache.clear()

    def _tokens(self, backbone, class_names: Tuple[str, ...]):
        key = (class_names, self.templates, self.synonyms)
        hit = self._token_cache.get(key)
        device = backbone.clip.positional_embedding.device
        if hit is None:
            prompts, owner = self.prompts(class_names)
            hit = (backbone.tokenize(prompts).cpu(), torch.tensor(owner, dtype=torch.long))
            self._token_cache[key] = hit
            while len(self._token_cache) > max(self.cache_size, 1):
                self._token_cache.popitem(last=False)
        return hit[0].to(device), hit[1].to(device)

    def forward(self, backbone, class_names: Sequence[str],
                weights: Optional[dict] = None) -> torch.Tensor:
        """Text embeddings of a vocabulary.

        Args:
            backbone (HCLIPBackbone): Provides ``tokenize`` and
                ``encode_text`` (the tuned text tower).
            class_names (Sequence[str]): The vocabulary (N names).
            weights (dict, optional): The adapted weights of this forward
                (``backbone.adapted_weights()``).

        Returns:
            Tensor: [N, P, C] L2-normalised embeddings, P templates.
        """
        class_names = check_vocabulary(class_names)
        if self.training:
            self._cache.clear()
            return self._encode(backbone, class_names, weights)
        device = backbone.clip.positional_embedding.device
        key = (class_names, self.templates, self.synonyms, id(backbone),
               backbone.weights_version, str(device), torch.is_autocast_enabled(device.type))
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        out = self._encode(backbone, class_names, weights).detach()
        if self.cache_size:
            self._cache[key] = out
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return out

    def _encode(self, backbone, class_names, weights) -> torch.Tensor:
        tokens, owner = self._tokens(backbone, class_names)
        self.num_encodes += 1
        if self.training:
            emb = backbone.encode_text(tokens, weights)
        else:
            emb = torch.cat([
                backbone.encode_text(tokens[i:i + self.eval_batch_size], weights)
                for i in range(0, len(tokens), self.eval_batch_size)
            ])
        p = self.num_templates
        emb = F.normalize(emb.float(), dim=-1).view(len(owner), p, -1)
        if len(owner) != len(class_names):  # 'average': mean of normalised synonyms
            summed = emb.new_zeros(len(class_names), p, emb.shape[-1])
            emb = F.normalize(summed.index_add(0, owner, emb), dim=-1)
        return emb
