"""H-CLIP adapter: POF block transforms + DCRC for both towers of an open_clip ViT CLIP.

One call of the adapter (:meth:`HCLIPAdapter.forward`) does, for the whole model:

1. assemble all raw blocks into the DCRC tensor ``T ∈ R^{q×q×S×M}`` (Eq. 6-7) and mix it once
   (Eq. 16 or 17), unless DCRC is off;
2. map the blocks of the orthogonal tower(s) through the Cayley map in one batched fp32 solve
   (Eq. 2-3);
3. transform every target weight of a tower in batched einsums (Eq. 4-5): ``W' = W · B`` (input
   side) or ``W' = B · W`` (output side), where ``B = diag(R_1..R_b)``;

and returns the transformed weights by their ``clip.named_parameters()`` names, ready for
``torch.func.functional_call(clip, weights, args, kwargs, strict=False)``. open_clip's forward is
untouched. :meth:`HCLIPAdapter.merge` folds the transforms into the frozen weights for
zero-overhead inference and :meth:`HCLIPAdapter.unmerge` restores them bit-exactly.
"""
import math
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .block_transforms import (SIDES, _accumulate_dtype, _autocast_dtype, _no_autocast, cayley,
                               layerwise_block_product)
from .merging import MergeableAdapterMixin
from .clip_towers import TOWERS, TowerSpec, find_vit_towers
from .dcrc import DCRC, DCRC_VARIANTS
from .energy import hyperspherical_energy, relative_energy_drift

__all__ = [
    'HCLIPAdapter', 'TARGETS', 'ORTHOGONAL', 'TRAIN_MODES', 'SIDE_PRESETS', 'CAYLEY_CONVENTIONS',
    'OFFICIAL_COMPAT', 'freeze_module'
]

TARGETS = ('q', 'k', 'v', 'out')
QKV = ('q', 'k', 'v')
#: which towers get Cayley-orthogonal blocks (paper Table 4b: none / all / text only = POF)
ORTHOGONAL = {'text': ('text', ), 'none': (), 'all': ('image', 'text'), 'image': ('image', )}
TRAIN_MODES = ('blocks+dcrc', 'dcrc_only')
SIDE_PRESETS = {
    'input': dict(q='input', k='input', v='input', out='input'),  # W·B everywhere (paper)
    'official': dict(q='input', k='input', v='input', out='output'),  # authors' released code
}
#: 'paper': R = (I + Q)(I - Q)^{-1} (Eq. 2); 'official': R = (I - Q)(I + Q)^{-1} (released code)
CAYLEY_CONVENTIONS = ('paper', 'official')
#: keyword arguments reproducing the authors' released code (DESIGN §3, "official-compat")
OFFICIAL_COMPAT = dict(
    sides='official', dcrc='linear', dcrc_per_layer=True, cayley_convention='official')
#: order of the towers along mode 3 of the DCRC tensor (S = b_text + b_image)
DCRC_TOWER_ORDER = ('text', 'image')


def freeze_module(module: nn.Module) -> nn.Module:
    """Set ``requires_grad=False`` on every parameter of ``module`` and return it."""
    for param in module.parameters():
        param.requires_grad_(False)
    return module


def _divisors(n: int) -> List[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


def _suggest_block_sizes(widths: Sequence[int], q: int, count: int = 3) -> List[int]:
    common = sorted(set.intersection(*(set(_divisors(w)) for w in widths)))
    ranked = sorted(common, key=lambda k: (abs(math.log(k / q)), -k))
    return sorted(ranked[:count])


class HCLIPAdapter(MergeableAdapterMixin, nn.Module):
    """POF + DCRC parameters for an open_clip ViT CLIP and the weights they produce.

    The adapter does NOT register ``clip`` as a submodule: its ``state_dict`` holds only the
    adapter parameters (``blocks.image``, ``blocks.text`` and ``dcrc.*``); the model is passed
    to every method that needs it.

    Blocks are stored per tower as ``[M_t, b_t, q, q]`` (position-major, the memory layout of
    the DCRC tensor in :mod:`mmseg_hclip.peft.dcrc`): position
    ``m = layer · n_targets + target``. A free (non-orthogonal) tower stores its blocks ``R``
    (init ``I``), an orthogonal tower the raw generators ``P`` (init 0) whose skew part is
    Cayley-mapped after DCRC. At init the adapted
    model is therefore exactly the pretrained model, for every variant.

    Towers of different depth (e.g. ViT-L/14: 24 image and 12 text blocks) share the position
    mode by relative depth: ``M = n_targets · max(L_image, L_text)`` and text layer ``l`` of
    ``L_t`` occupies layer slot ``(l + 1) · L_max // L_t - 1`` (the last layers meet); the unused
    slots of the shallower tower are zero padding (constants, not parameters), and what DCRC
    writes into them is discarded.

    Args:
        clip (nn.Module): an ``open_clip.CLIP`` / ``CustomTextCLIP`` with ViT towers.
        block_size (int): ``q``; must divide the width of both towers.
        orthogonal (str): 'text' (POF, default), 'none', 'all' or 'image': which towers get
            Cayley-orthogonal blocks.
        sides (str | dict): 'input' (``W · B`` for every target), 'official' (q, k, v input,
            out output side, as the authors' code) or a dict ``target -> 'input' | 'output'``.
        dcrc (str): 'mlp' (Eq. 17, α zero-init), 'linear' (Eq. 16, identity ``S3``/``S4``) or
            'off'.
        train (str): 'blocks+dcrc' (default) or 'dcrc_only' (blocks frozen, relation maps
            trained).
        targets (Sequence[str]): subset of ``('q', 'k', 'v', 'out')``: the q/k/v row slices of
            every ``attn.in_proj_weight`` and every ``attn.out_proj.weight``.
        dcrc_hidden (tuple[int, int] | None): hidden widths of ``f3``, ``f4`` ('mlp');
            default ``(S, M)``.
        dcrc_activation (str): nonlinearity of the 'mlp' variant ('gelu', 'relu', 'tanh', 'silu').
        dcrc_per_layer (bool): 'linear' only: one ``S3`` per layer index (authors' code) instead
            of one shared ``S3`` (Eq. 16).
        cayley_convention (str): 'paper' (Eq. 2) or 'official' (``(I - Q)(I + Q)^{-1}``, the
            Cayley map of ``-Q``, as in the authors' code).
        freeze_clip (bool): set ``requires_grad=False`` on every parameter of ``clip`` (the
            paper keeps all of CLIP frozen).
        cache_frozen (bool): keep the frozen target weights stacked in the layout of the
            batched block product between calls (rebuilt when they change). Saves three copies
            of them per step; costs their memory (4·d²·L per tower: 162 MB for ViT-B/16 in
            fp32) between steps, while during a training step the backward pass holds that
            tensor anyway.

    Example:
        >>> adapter = HCLIPAdapter(clip, block_size=128)
        >>> weights = adapter(clip)  # {'visual.transformer.resblocks.0.attn.in_proj_weight': ...}
        >>> feats = torch.func.functional_call(clip, weights, (image, tokens), strict=False)
    """

    def __init__(self,
                 clip: nn.Module,
                 block_size: int = 128,
                 orthogonal: str = 'text',
                 sides: Union[str, Mapping[str, str]] = 'input',
                 dcrc: str = 'mlp',
                 train: str = 'blocks+dcrc',
                 targets: Sequence[str] = TARGETS,
                 *,
                 dcrc_hidden: Optional[Tuple[int, int]] = None,
                 dcrc_activation: str = 'gelu',
                 dcrc_per_layer: bool = False,
                 cayley_convention: str = 'paper',
                 freeze_clip: bool = True,
                 cache_frozen: bool = True):
        super().__init__()
        self.targets = self._check_targets(targets)
        self.sides = self._check_sides(sides, self.targets)
        if orthogonal not in ORTHOGONAL:
            raise ValueError(f'unknown orthogonal={orthogonal!r}; choose one of '
                             f'{sorted(ORTHOGONAL)} (text = POF)')
        if dcrc not in DCRC_VARIANTS:
            raise ValueError(f'unknown dcrc={dcrc!r}; choose one of {DCRC_VARIANTS}')
        if train not in TRAIN_MODES:
            raise ValueError(f'unknown train={train!r}; choose one of {TRAIN_MODES}')
        if train == 'dcrc_only' and dcrc == 'off':
            raise ValueError("train='dcrc_only' trains the relation maps only; it needs "
                             "dcrc='mlp' or 'linear', not 'off'")
        if cayley_convention not in CAYLEY_CONVENTIONS:
            raise ValueError(f'unknown cayley_convention={cayley_convention!r}; choose one of '
                             f'{CAYLEY_CONVENTIONS}')
        if dcrc_per_layer and dcrc != 'linear':
            raise ValueError("dcrc_per_layer=True is a setting of dcrc='linear'")
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size <= 0:
            raise ValueError(f'block_size must be a positive integer, got {block_size!r}')

        image, text = find_vit_towers(clip)
        self._check_block_size(block_size, (image, text))
        self.block_size = q = block_size
        self.orthogonal, self.dcrc_variant, self.train_mode = orthogonal, dcrc, train
        self.cayley_convention = cayley_convention
        self.towers: Dict[str, TowerSpec] = {'image': image, 'text': text}
        self.orthogonal_towers = ORTHOGONAL[orthogonal]
        self.num_layers_max = max(image.num_layers, text.num_layers)
        n_t = len(self.targets)
        self.num_positions = n_t * self.num_layers_max
        self.num_slices = sum(spec.width // q for spec in self.towers.values())

        params = dict(clip.named_parameters())
        self.blocks = nn.ParameterDict()
        for name in TOWERS:
            spec = self.towers[name]
            ref = params[spec.in_proj_names[0]]
            num = n_t * spec.num_layers
            b = spec.width // q
            if name in self.orthogonal_towers:  # generators P, init 0 -> R = I
                init = torch.zeros(num, b, q, q, device=ref.device)
            else:  # blocks R, init I
                init = torch.eye(q, device=ref.device).expand(num, b, q, q).clone()
            self.blocks[name] = nn.Parameter(init)
            slots = torch.tensor([(layer + 1) * self.num_layers_max // spec.num_layers - 1
                                  for layer in range(spec.num_layers)])
            positions = (slots[:, None] * n_t + torch.arange(n_t)).reshape(-1)
            self.register_buffer(f'_positions_{name}', positions.to(ref.device), persistent=False)

        self.dcrc = None
        if dcrc != 'off':
            self.dcrc = DCRC(
                self.num_slices,
                self.num_positions,
                variant=dcrc,
                hidden=dcrc_hidden,
                activation=dcrc_activation,
                mode3_groups=self.num_layers_max if dcrc_per_layer else 1)
            self.dcrc.to(params[image.in_proj_names[0]].device)
        if train == 'dcrc_only':
            self.blocks.requires_grad_(False)
        if freeze_clip:
            freeze_module(clip)

        self.cache_frozen = cache_frozen
        self._frozen_cache: Dict[Tuple[str, str, str], Tuple[tuple, Tensor]] = {}
        self._init_merge_state()
        self._energy_cache: Dict[Tuple[str, str], Tuple[int, int, Tensor]] = {}

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_targets(targets: Sequence[str]) -> Tuple[str, ...]:
        if isinstance(targets, str):
            targets = (targets, )
        targets = tuple(targets)
        unknown = [t for t in targets if t not in TARGETS]
        if unknown:
            raise ValueError(f'unknown target(s) {unknown}; valid targets are {TARGETS} '
                             '(q, k, v: row slices of attn.in_proj_weight; out: '
                             'attn.out_proj.weight)')
        if not targets or len(set(targets)) != len(targets):
            raise ValueError(f'targets must be a non-empty list without repeats, got {targets}')
        return tuple(t for t in TARGETS if t in targets)

    @staticmethod
    def _check_sides(sides: Union[str, Mapping[str, str]],
                     targets: Tuple[str, ...]) -> Dict[str, str]:
        if isinstance(sides, str):
            if sides not in SIDE_PRESETS:
                raise ValueError(f'unknown sides={sides!r}; choose one of {sorted(SIDE_PRESETS)} '
                                 f"or a dict like dict(q='input', k='input', v='input', "
                                 f"out='output')")
            return {t: SIDE_PRESETS[sides][t] for t in targets}
        sides = dict(sides)
        unknown = [t for t in sides if t not in TARGETS]
        missing = [t for t in targets if t not in sides]
        if unknown or missing:
            raise ValueError(f'sides dict must give a side for every target {targets}; '
                             f'unknown keys {unknown}, missing {missing}')
        bad = {t: s for t, s in sides.items() if s not in SIDES}
        if bad:
            raise ValueError(f'sides must be one of {SIDES}; got {bad}')
        return {t: sides[t] for t in targets}

    @staticmethod
    def _check_block_size(q: int, towers: Iterable[TowerSpec]) -> None:
        towers = list(towers)
        for spec in towers:
            if spec.width % q:
                widths = sorted({s.width for s in towers})
                suggestion = ', '.join(map(str, _suggest_block_sizes(widths, q)))
                raise ValueError(
                    f'block_size q={q} does not divide the {spec.name} width {spec.width} '
                    f'({spec.prefix}.*.attn); choose a divisor of every target width {widths}, '
                    f'such as {suggestion}')

    # ------------------------------------------------------------------ DCRC tensor
    def _positions(self, tower: str) -> Tensor:
        return getattr(self, f'_positions_{tower}')

    def _full_depth(self, tower: str) -> bool:
        return self.towers[tower].num_layers == self.num_layers_max

    def _assemble(self, per_tower: Mapping[str, Tensor]) -> Tensor:
        """Per-tower blocks ``[M_t, b_t, q, q]`` -> stored DCRC tensor ``[M, S, q, q]``."""
        parts = []
        for name in DCRC_TOWER_ORDER:
            part = per_tower[name]
            if not self._full_depth(name):
                full = part.new_zeros(self.num_positions, *part.shape[1:])
                part = full.index_copy(0, self._positions(name), part)
            parts.append(part)
        return torch.cat(parts, dim=1)

    def _split(self, stored: Tensor) -> Dict[str, Tensor]:
        """Stored DCRC tensor ``[M, S, q, q]`` -> per-tower blocks ``[M_t, b_t, q, q]`` (views)."""
        sizes = [self.towers[name].width // self.block_size for name in DCRC_TOWER_ORDER]
        out = {}
        for name, part in zip(DCRC_TOWER_ORDER, stored.split(sizes, dim=1)):
            if not self._full_depth(name):
                part = part.index_select(0, self._positions(name))
            out[name] = part
        return out

    def dcrc_tensor(self, mixed: bool = False) -> Tensor:
        """The block tensor ``T ∈ R^{q×q×S×M}`` of Eq. 7 (text blocks first along mode 3).

        Args:
            mixed (bool): return ``T`` after DCRC (Eq. 16/17) instead of the raw parameters.

        Returns:
            Tensor: ``[q, q, S, M]``, a permuted view of the stored ``[M, S, q, q]`` tensor.
        """
        stored = self._assemble(dict(self.blocks.items()))
        if mixed and self.dcrc is not None:
            with _no_autocast(stored.device.type):  # mixed in fp32, as the parameters are
                stored = self.dcrc(stored)
        return stored.permute(2, 3, 1, 0)

    def _mixed_blocks(self) -> Dict[str, Tensor]:
        raw = dict(self.blocks.items())
        if self.dcrc is None:
            return raw
        stored = self._assemble(raw)
        with _no_autocast(stored.device.type):  # fp32 under autocast: blocks are I + small
            mixed = self.dcrc(stored)
        return self._split(mixed)  # one DCRC mixing per call

    # ------------------------------------------------------------------ transforms
    def transforms(self, towers: Sequence[str] = TOWERS) -> Dict[str, Tensor]:
        """Final blocks ``R`` per tower after DCRC and the Cayley map (Eq. 2-4, 16-17).

        Args:
            towers (Sequence[str]): towers to return ('image', 'text').

        Returns:
            dict[str, Tensor]: tower -> ``[L_t, n_targets, b_t, q, q]`` fp32 blocks (also under
            autocast: DCRC and the Cayley map run with autocast off); orthogonal towers'
            blocks satisfy ``R^T R = I``.
        """
        mixed = self._mixed_blocks()
        q = self.block_size
        out = {}
        ortho = [name for name in towers if name in self.orthogonal_towers]
        if ortho:  # one batched fp32 Cayley solve for every orthogonal block
            flat = [mixed[name].reshape(-1, q, q) for name in ortho]
            generators = flat[0] if len(flat) == 1 else torch.cat(flat)
            if self.cayley_convention == 'official':
                generators = -generators
            rotations = cayley(generators).split([f.shape[0] for f in flat])
            out.update(zip(ortho, rotations))
        for name in towers:
            blocks = out.get(name, mixed[name])
            spec = self.towers[name]
            out[name] = blocks.reshape(spec.num_layers, len(self.targets), spec.width // q, q, q)
        return {name: out[name] for name in towers}

    def _frozen_stack(self, clip: nn.Module, spec: TowerSpec, kind: str, side: str,
                      dtype: Optional[torch.dtype]) -> Tensor:
        """The frozen weights of one kind, stacked in the layout of the batched block product.

        Built once and cached while the frozen weights are unchanged (same storage and version
        counter), frozen and of the requested dtype: the per-step cost is then zero and the
        cache is the very tensor the backward pass would keep alive anyway.

        Args:
            clip (nn.Module): the model holding the weights.
            spec (TowerSpec): the tower.
            kind (str): 'in' (``attn.in_proj_weight``, n = 3 row slices) or 'out'
                (``attn.out_proj.weight``, n = 1).
            side (str): 'input' -> ``[L, n, b, d, q]`` (the q-column blocks of every weight);
                'output' -> ``[L, n, b, q, d]`` (the q-row blocks: the plain stack).
            dtype (torch.dtype | None): wanted dtype (default: the weights' own).

        Returns:
            Tensor: the stack described above.
        """
        names = spec.in_proj_names if kind == 'in' else spec.out_proj_names
        try:
            params = [clip.get_parameter(name) for name in names]
        except AttributeError as err:
            raise ValueError(f'the given model has no parameter {err}; pass the CLIP this '
                             'adapter was built for') from err
        L, d, n = spec.num_layers, spec.width, 3 if kind == 'in' else 1
        b, q = d // self.block_size, self.block_size
        if tuple(params[0].shape) != (n * d, d):
            raise ValueError(f'{names[0]} has shape {tuple(params[0].shape)}, but the adapter '
                             f'was built for {(n * d, d)}; pass the CLIP it was built for')
        dtype = dtype or params[0].dtype
        cacheable = (
            self.cache_frozen and dtype == params[0].dtype and
            not any(p.requires_grad for p in params) and not torch.is_inference_mode_enabled())
        key = (spec.name, kind, side)
        stamp = (dtype, params[0].device, tuple((p.data_ptr(), p._version) for p in params))
        hit = self._frozen_cache.pop(key, None)
        if cacheable and hit is not None and hit[0] == stamp:
            self._frozen_cache[key] = hit
            return hit[1]
        weight = torch.stack(params).to(dtype)  # [L, n d, d]
        if side == 'input':
            weight = weight.view(L, n, d, b, q).permute(0, 1, 3, 2, 4).contiguous()
        else:
            weight = weight.view(L, n, b, q, d)
        if cacheable:
            self._frozen_cache[key] = (stamp, weight)
        return weight

    @staticmethod
    def _block_product(frozen: Tensor, blocks: Tensor, side: str, dtype: torch.dtype) -> Tensor:
        """``W · B`` or ``B · W`` for a batch of weights, as one ``bmm`` (Eq. 4-5).

        Formed in fp32 (fp64 for fp64 inputs) with autocast off and cast once to ``dtype``.

        Args:
            frozen (Tensor): ``[N, b, d_out, q]`` (input side) or ``[N, b, q, d_in]`` (output
                side), from :meth:`_frozen_stack`.
            blocks (Tensor): ``[N, b, q, q]``.
            side (str): 'input' or 'output'.
            dtype (torch.dtype): dtype of the result.

        Returns:
            Tensor: transformed weights ``[N, d_out, d_in]``.
        """
        N, b, q = blocks.shape[:3]
        acc = _accumulate_dtype(frozen.dtype, blocks.dtype)
        blocks, frozen = blocks.reshape(N * b, q, q).to(acc), frozen.to(acc)
        with _no_autocast(blocks.device.type):
            if side == 'input':  # W'[:, block i] = W[:, block i] @ R_i
                d_out = frozen.shape[2]
                out = torch.bmm(frozen.reshape(N * b, d_out, q), blocks).to(dtype)
                return out.view(N, b, d_out, q).transpose(1, 2).reshape(N, d_out, b * q)
            d_in = frozen.shape[3]  # W'[block i, :] = R_i @ W[block i, :]
            return torch.bmm(blocks, frozen.reshape(N * b, q, d_in)).to(dtype).view(
                N, b * q, d_in)

    def _tower_weights(self,
                       clip: nn.Module,
                       spec: TowerSpec,
                       blocks: Tensor,
                       dtype: Optional[torch.dtype] = None) -> Dict[str, Tensor]:
        """Transformed ``in_proj_weight`` / ``out_proj.weight`` of every layer of one tower.

        Args:
            clip (nn.Module): the model holding the frozen weights.
            spec (TowerSpec): the tower.
            blocks (Tensor): ``[L, n_targets, b, q, q]`` from :meth:`transforms`.
            dtype (torch.dtype | None): dtype of the returned weights (default: the frozen
                weights' own); they are formed in fp32 whatever it is.

        Returns:
            dict[str, Tensor]: parameter name -> transformed weight.
        """
        L, d = spec.num_layers, spec.width
        pos = {t: i for i, t in enumerate(self.targets)}
        result = {}
        qkv = [t for t in QKV if t in pos]
        if qkv:
            sides = {self.sides[t] for t in qkv}
            if len(qkv) == 3 and len(sides) == 1:  # one product for q, k, v of every layer
                side = sides.pop()
                frozen = self._frozen_stack(clip, spec, 'in', side, None)
                out_dtype = dtype or frozen.dtype
                r = blocks[:, pos['q']:pos['q'] + 3]  # [L, 3, b, q, q]
                if frozen.requires_grad:  # trainable CLIP weights: plain autograd
                    new_in = self._block_product(frozen.flatten(0, 1), r.flatten(0, 1), side,
                                                 out_dtype)
                    new_in = new_in.view(L, 3 * d, d).unbind(0)
                else:
                    new_in = layerwise_block_product(frozen, r, side, out_dtype)
            else:
                pieces = []
                for i, t in enumerate(QKV):
                    side = self.sides.get(t, 'output')
                    frozen = self._frozen_stack(clip, spec, 'in', side, None)[:, i]
                    out_dtype = dtype or frozen.dtype
                    if t in pos:
                        pieces.append(
                            self._block_product(frozen, blocks[:, pos[t]], side, out_dtype))
                    else:  # untargeted slice: the frozen rows themselves
                        pieces.append(frozen.reshape(L, d, d).to(out_dtype))
                new_in = torch.stack(pieces, dim=1).view(L, 3 * d, d).unbind(0)
            result.update(zip(spec.in_proj_names, new_in))
        if 'out' in pos:
            side = self.sides['out']
            frozen = self._frozen_stack(clip, spec, 'out', side, None)
            out_dtype = dtype or frozen.dtype
            r = blocks[:, pos['out']:pos['out'] + 1]  # [L, 1, b, q, q]
            if frozen.requires_grad:
                new_out = self._block_product(frozen[:, 0], r[:, 0], side, out_dtype).unbind(0)
            else:
                new_out = layerwise_block_product(frozen, r, side, out_dtype)
            result.update(zip(spec.out_proj_names, new_out))
        return result

    def _check_towers_arg(self, towers: Union[str, Sequence[str]]) -> Tuple[str, ...]:
        towers = (towers, ) if isinstance(towers, str) else tuple(towers)
        unknown = [t for t in towers if t not in TOWERS]
        if unknown:
            raise ValueError(f'unknown tower(s) {unknown}; choose from {TOWERS}')
        return tuple(t for t in TOWERS if t in towers)

    def forward(self,
                clip: nn.Module,
                towers: Union[str, Sequence[str]] = TOWERS,
                dtype: Optional[torch.dtype] = None) -> Dict[str, Tensor]:
        """Transformed target weights for ``torch.func.functional_call`` (Eq. 5).

        One DCRC mixing, one batched fp32 Cayley solve and batched block products per tower.
        Everything runs in fp32 (fp64 for fp64 parameters), also under autocast: DCRC, the
        Cayley map and the products ``W·B`` / ``B·W`` see the unrounded blocks, and each
        transformed weight is cast once to the output dtype.

        Args:
            clip (nn.Module): the CLIP the adapter was built for (its frozen weights are read).
            towers (str | Sequence[str]): towers to build weights for ('image', 'text'); DCRC
                always mixes the blocks of both.
            dtype (torch.dtype | None): dtype of the returned weights (default: the autocast
                dtype when autocast is on for the adapter's device, else the frozen weights'
                dtype).

        Returns:
            dict[str, Tensor]: names from ``clip.named_parameters()``
            (``'visual.transformer.resblocks.0.attn.in_proj_weight'``,
            ``'transformer.resblocks.3.attn.out_proj.weight'``, ...) -> transformed weights
            of the same shapes. Empty when the adapter is merged (the model's own weights are
            then already the transformed ones).
        """
        if self._merged:
            return {}
        towers = self._check_towers_arg(towers)
        device = self.blocks['image'].device
        if dtype is None:
            dtype = _autocast_dtype(device.type)  # None: each weight keeps its own dtype
        with _no_autocast(device.type):
            blocks = self.transforms(towers)
            weights = {}
            for name in towers:
                weights.update(self._tower_weights(clip, self.towers[name], blocks[name], dtype))
        return weights

    # ------------------------------------------------------------------ merge
    # merged / merge / unmerge: MergeableAdapterMixin (merging.py)

    # ------------------------------------------------------------------ energy
    def _reference_energy(self, key: Tuple[str, str], weight: Tensor, **kwargs) -> Tensor:
        stamp = (weight.data_ptr(), weight._version)
        cached = self._energy_cache.get(key)
        if cached is None or cached[:2] != stamp:
            cached = (*stamp, hyperspherical_energy(weight, **kwargs))
            self._energy_cache[key] = cached
        return cached[2]

    @torch.no_grad()
    def energy_drift(self,
                     clip: nn.Module,
                     towers: Union[str, Sequence[str]] = ('text', ),
                     **kwargs) -> Dict[str, float]:
        """Relative hyperspherical-energy drift of every target against its pretrained weight.

        ``|HE(W') - HE(W)| / HE(W)`` (Eq. 1, normalised) for the q, k, v slices and out_proj of
        every layer. Zero (to rounding) for orthogonal towers on the input side. The pretrained
        energies are cached (invalidated when the frozen weights change).

        Args:
            clip (nn.Module): the CLIP the adapter was built for (merged or not).
            towers (str | Sequence[str]): towers to report (default: text).
            **kwargs: forwarded to :func:`hyperspherical_energy` (``chunk_size``, ``dtype``).

        Returns:
            dict[str, float]: ``'{tower}.{layer}.{target}'`` -> drift.
        """
        towers = self._check_towers_arg(towers)
        if self._merged:
            if self._originals is None:
                raise RuntimeError('merged with keep_original=False: no pretrained weights to '
                                   'compare against')
            current = {n: clip.get_parameter(n) for n in self._originals}
            original = self._originals
        else:
            current = self.forward(clip, towers)
            original = {n: clip.get_parameter(n) for n in current}
        drifts = {}
        for tower in towers:
            spec = self.towers[tower]
            for layer in range(spec.num_layers):
                for target in self.targets:
                    if target == 'out':
                        name, rows = spec.out_proj_names[layer], slice(None)
                    else:
                        i = QKV.index(target)
                        name, rows = spec.in_proj_names[layer], slice(i * spec.width,
                                                                      (i + 1) * spec.width)
                    ref = original[name][rows]
                    ref_energy = self._reference_energy((name, target), ref, **kwargs)
                    drift = relative_energy_drift(
                        current[name][rows], ref, reference_energy=ref_energy, **kwargs)
                    drifts[f'{tower}.{layer}.{target}'] = drift.item()
        return drifts

    # ------------------------------------------------------------------ reporting
    def parameter_counts(self) -> Dict[str, Dict[str, int]]:
        """Stored and effective parameter counts (the parameter report of DESIGN §3).

        Returns:
            dict: ``{'image'|'text'|'dcrc'|'total': {'stored': n, 'trainable': n,
            'effective': n}}``. ``effective`` counts the degrees of freedom: a Cayley block has
            ``q(q-1)/2`` (its skew part), a free block ``q²``; relation maps count in full.
        """
        q = self.block_size
        counts = {}
        for name in TOWERS:
            param = self.blocks[name]
            n_blocks = param.shape[0] * param.shape[1]
            per_block = q * (q - 1) // 2 if name in self.orthogonal_towers else q * q
            counts[name] = dict(
                stored=param.numel(),
                trainable=param.numel() if param.requires_grad else 0,
                effective=n_blocks * per_block)
        dcrc_params = list(self.dcrc.parameters()) if self.dcrc is not None else []
        n_dcrc = sum(p.numel() for p in dcrc_params)
        counts['dcrc'] = dict(
            stored=n_dcrc,
            trainable=sum(p.numel() for p in dcrc_params if p.requires_grad),
            effective=n_dcrc)
        counts['total'] = {
            key: sum(counts[k][key] for k in ('image', 'text', 'dcrc'))
            for key in ('stored', 'trainable', 'effective')
        }
        return counts

    def weight_settings(self) -> Dict[str, object]:
        """The settings that decide what the adapter's parameters mean (for checkpoints).

        Two adapters with equal settings read the same parameters the same way; a difference
        in any of them (e.g. ``orthogonal``, ``cayley_convention``, ``sides``, ``dcrc``) makes
        the same tensors give other weights. Values are plain (JSON-like) and resolved:
        ``sides`` is a preset name when it is one, else the per-target dict; ``dcrc_hidden``
        holds the built widths; settings that do not apply to the DCRC variant hold their
        defaults (so the values always build an equal adapter). ``train``, ``freeze_clip`` and
        ``cache_frozen`` do not change the meaning and are left out.

        Returns:
            dict: keyword argument of :class:`HCLIPAdapter` -> value.
        """
        sides = next((name for name, preset in SIDE_PRESETS.items()
                      if {t: preset[t] for t in self.targets} == self.sides), dict(self.sides))
        mlp = self.dcrc_variant == 'mlp'
        return dict(
            block_size=self.block_size,
            orthogonal=self.orthogonal,
            sides=sides,
            dcrc=self.dcrc_variant,
            targets=list(self.targets),
            cayley_convention=self.cayley_convention,
            dcrc_hidden=[self.dcrc.f3.hidden, self.dcrc.f4.hidden] if mlp else None,
            dcrc_activation=self.dcrc.f3.activation if mlp else 'gelu',  # the default
            dcrc_per_layer=bool(self.dcrc_variant == 'linear' and self.dcrc.s3.dim() == 3))

    def extra_repr(self) -> str:
        towers = ', '.join(f'{n}: L={s.num_layers} d={s.width} b={s.width // self.block_size}'
                           for n, s in self.towers.items())
        return (f'q={self.block_size}, orthogonal={self.orthogonal}, sides={self.sides}, '
                f'dcrc={self.dcrc_variant}, train={self.train_mode}, '
                f'cayley={self.cayley_convention}, S={self.num_slices}, M={self.num_positions}, '
                f'{towers}')
