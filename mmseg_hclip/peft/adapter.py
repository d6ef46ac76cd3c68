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

from . import reporting
from ._engine import DCRC_TOWER_ORDER, QKV, BlockLayout, FrozenStacks, tower_weights  # noqa: F401
from .block_transforms import SIDES, _autocast_dtype, _no_autocast, cayley
from .clip_towers import TOWERS, TowerSpec, find_vit_towers
from .dcrc import DCRC, DCRC_VARIANTS
from .merging import MergeableAdapterMixin

__all__ = [
    'HCLIPAdapter', 'TARGETS', 'ORTHOGONAL', 'TRAIN_MODES', 'SIDE_PRESETS', 'CAYLEY_CONVENTIONS',
    'OFFICIAL_COMPAT', 'freeze_module'
]

TARGETS = ('q', 'k', 'v', 'out')
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


def check_targets(targets: Sequence[str]) -> Tuple[str, ...]:
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

def check_sides(sides: Union[str, Mapping[str, str]],
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

def check_block_size(q: int, towers: Iterable[TowerSpec]) -> None:
    towers = list(towers)
    for spec in towers:
        if spec.width % q:
            widths = sorted({s.width for s in towers})
            suggestion = ', '.join(map(str, _suggest_block_sizes(widths, q)))
            raise ValueError(
                f'block_size q={q} does not divide the {spec.name} width {spec.width} '
                f'({spec.prefix}.*.attn); choose a divisor of every target width {widths}, '
                f'such as {suggestion}')


def check_settings(block_size, orthogonal, sides, dcrc, train, targets, dcrc_per_layer,
                   cayley_convention) -> Tuple[Tuple[str, ...], Dict[str, str]]:
    """Every check of :class:`HCLIPAdapter`'s settings (except the block size against the
    towers, :func:`check_block_size`); returns the normalised ``(targets, sides)``."""
    targets = check_targets(targets)
    sides = check_sides(sides, targets)
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
    return targets, sides


class HCLIPAdapter(MergeableAdapterMixin, nn.Module):
    """POF + DCRC parameters for an open_clip ViT CLIP and the weights they produce.

    The adapter does NOT register ``clip`` as a submodule: its ``state_dict`` holds only the
    adapter parameters (``blocks.<tower>`` for a free tower, ``generators.<tower>`` for an
    orthogonal one, ``dcrc.*``); the model is passed to every method that needs it. State
    dicts of earlier versions (generators under ``blocks.<tower>``) load unchanged.

    Each tower's parameter is stored as ``[M_t, b_t, q, q]`` (position-major, the memory
    layout of the DCRC tensor, :class:`~mmseg_hclip.peft._engine.BlockLayout`): position
    ``m = layer · n_targets + target``. A free (non-orthogonal) tower stores its blocks ``R``
    (init ``I``), an orthogonal tower the generators ``P`` (init 0) whose skew part is
    Cayley-mapped after DCRC. At init the adapted model is therefore exactly the pretrained
    model, for every variant. The same computation, slowly and per equation:
    :mod:`mmseg_hclip.peft.reference`.

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
        self.targets, self.sides = check_settings(block_size, orthogonal, sides, dcrc, train,
                                                  targets, dcrc_per_layer, cayley_convention)
        image, text = find_vit_towers(clip)
        check_block_size(block_size, (image, text))
        self.block_size = q = block_size
        self.orthogonal, self.dcrc_variant, self.train_mode = orthogonal, dcrc, train
        self.cayley_convention = cayley_convention
        self.towers: Dict[str, TowerSpec] = {'image': image, 'text': text}
        self.orthogonal_towers = ORTHOGONAL[orthogonal]
        params = dict(clip.named_parameters())
        device = params[image.in_proj_names[0]].device
        self._layout = BlockLayout(self.towers, q, len(self.targets), device)
        self.num_layers_max = self._layout.num_layers_max
        self.num_positions = self._layout.num_positions
        self.num_slices = self._layout.num_slices

        # free towers store their blocks R (init I), orthogonal towers the Cayley generators P
        # (init 0 -> R = I): at init the adapted model is exactly the pretrained one
        self.blocks = nn.ParameterDict()  # R of the free towers
        self.generators = nn.ParameterDict()  # P of the orthogonal towers
        n_t = len(self.targets)
        for name in TOWERS:
            spec = self.towers[name]
            num, b = n_t * spec.num_layers, spec.width // q
            if name in self.orthogonal_towers:
                self.generators[name] = nn.Parameter(torch.zeros(num, b, q, q, device=device))
            else:
                self.blocks[name] = nn.Parameter(
                    torch.eye(q, device=device).expand(num, b, q, q).clone())
        self._register_load_state_dict_pre_hook(self._upgrade_hook)

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
            self.generators.requires_grad_(False)
        if freeze_clip:
            freeze_module(clip)

        self._frozen_cache: Dict[Tuple[str, str, str], Tuple[tuple, Tensor]] = {}
        self._stacks = FrozenStacks(q, cache_frozen, self._frozen_cache)
        self._init_merge_state()
        self._energy_cache: Dict[Tuple[str, str], Tuple[int, int, Tensor]] = {}

    @property
    def cache_frozen(self) -> bool:
        """Whether the frozen weights are kept stacked between calls (settable)."""
        return self._stacks.enabled

    @cache_frozen.setter
    def cache_frozen(self, value: bool) -> None:
        self._stacks.enabled = bool(value)
        if not value:
            self._frozen_cache.clear()

    def raw_parameters(self) -> Dict[str, nn.Parameter]:
        """tower -> its stored parameter ``[L_t · n_targets, b_t, q, q]`` (position-major):
        the blocks ``R`` of a free tower or the generators ``P`` of an orthogonal one."""
        return {name: (self.generators[name] if name in self.orthogonal_towers else
                       self.blocks[name]) for name in TOWERS}

    def upgrade_state_dict(self, state_dict: Dict[str, Tensor], prefix: str = '') -> None:
        """Rename, in place, the keys of earlier versions in ``state_dict``: they kept the
        generators of an orthogonal tower under ``{prefix}blocks.<tower>``, which now live
        under ``{prefix}generators.<tower>``. Run by ``load_state_dict`` and by key checks
        that compare a checkpoint with the model before loading."""
        for name in self.orthogonal_towers:
            old, new = f'{prefix}blocks.{name}', f'{prefix}generators.{name}'
            if old in state_dict and new not in state_dict:
                state_dict[new] = state_dict.pop(old)

    def _upgrade_hook(self, state_dict, prefix, *args, **kwargs) -> None:
        self.upgrade_state_dict(state_dict, prefix)

    # ------------------------------------------------------------------ DCRC tensor
    def dcrc_tensor(self, mixed: bool = False) -> Tensor:
        """The block tensor ``T ∈ R^{q×q×S×M}`` of Eq. 7 (text blocks first along mode 3).

        Args:
            mixed (bool): return ``T`` after DCRC (Eq. 16/17) instead of the raw parameters.

        Returns:
            Tensor: ``[q, q, S, M]``, a permuted view of the stored ``[M, S, q, q]`` tensor.
        """
        stored = self._layout.assemble(self.raw_parameters())
        if mixed and self.dcrc is not None:
            with _no_autocast(stored.device.type):  # mixed in fp32, as the parameters are
                stored = self.dcrc(stored)
        return stored.permute(2, 3, 1, 0)

    def _mixed_blocks(self) -> Dict[str, Tensor]:
        raw = self.raw_parameters()
        if self.dcrc is None:
            return raw
        stored = self._layout.assemble(raw)
        with _no_autocast(stored.device.type):  # fp32 under autocast: blocks are I + small
            mixed = self.dcrc(stored)
        return self._layout.split(mixed)  # one DCRC mixing per call

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
        device = self.raw_parameters()['image'].device
        if dtype is None:
            dtype = _autocast_dtype(device.type)  # None: each weight keeps its own dtype
        with _no_autocast(device.type):
            blocks = self.transforms(towers)
            weights = {}
            for name in towers:
                weights.update(
                    tower_weights(clip, self.towers[name], blocks[name], self.targets, self.sides,
                                  self._stacks, dtype))
        return weights

    # ------------------------------------------------------------------ merge
    # merged / merge / unmerge: MergeableAdapterMixin (merging.py)

    # ------------------------------------------------------------------ reporting
    def energy_drift(self,
                     clip: nn.Module,
                     towers: Union[str, Sequence[str]] = ('text', ),
                     **kwargs) -> Dict[str, float]:
        """:func:`mmseg_hclip.peft.reporting.energy_drift` of this adapter."""
        return reporting.energy_drift(self, clip, towers, **kwargs)

    def parameter_counts(self) -> Dict[str, Dict[str, int]]:
        """:func:`mmseg_hclip.peft.reporting.parameter_counts` of this adapter."""
        return reporting.parameter_counts(self)

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
