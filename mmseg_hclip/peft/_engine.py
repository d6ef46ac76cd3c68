"""The fast engine behind :class:`~mmseg_hclip.peft.HCLIPAdapter` (private).

Everything here computes what :mod:`mmseg_hclip.peft.reference` computes, only fast: the DCRC
tensor in its stored ``[M, S, q, q]`` layout (:class:`BlockLayout`), the frozen weights kept
stacked in the layout of the batched block products (:class:`FrozenStacks`), and the transformed
weights of a whole tower in a few ``bmm`` calls (:func:`tower_weights`, with the layer-wise
custom backward of :func:`~mmseg_hclip.peft.block_transforms.layerwise_block_product`).
"""
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .block_transforms import _accumulate_dtype, _no_autocast, layerwise_block_product
from .clip_towers import TowerSpec

QKV = ('q', 'k', 'v')
#: order of the towers along mode 3 of the DCRC tensor (S = b_text + b_image)
DCRC_TOWER_ORDER = ('text', 'image')


class BlockLayout:
    """Stored DCRC tensor ``[M, S, q, q]`` <-> per-tower blocks ``[M_t, b_t, q, q]``.

    Position ``m = slot · n_targets + target`` (layer-major); a tower with fewer layers than
    ``L_max`` puts layer ``l`` at slot ``(l + 1) · L_max // L_t - 1``, the other slots are zero.

    Args:
        towers (Mapping[str, TowerSpec]): 'image' and 'text'.
        block_size (int): ``q``.
        num_targets (int): ``n_targets``.
        device (torch.device): where the position indices live.
    """

    def __init__(self, towers: Mapping[str, TowerSpec], block_size: int, num_targets: int,
                 device: torch.device):
        self.towers, self.block_size = towers, block_size
        self.num_layers_max = max(spec.num_layers for spec in towers.values())
        self.num_positions = num_targets * self.num_layers_max
        self.num_slices = sum(spec.width // block_size for spec in towers.values())
        self.positions = {}
        for name, spec in towers.items():
            slots = torch.tensor([(layer + 1) * self.num_layers_max // spec.num_layers - 1
                                  for layer in range(spec.num_layers)])
            self.positions[name] = (slots[:, None] * num_targets +
                                    torch.arange(num_targets)).reshape(-1).to(device)

    def _full_depth(self, tower: str) -> bool:
        return self.towers[tower].num_layers == self.num_layers_max

    def assemble(self, per_tower: Mapping[str, Tensor]) -> Tensor:
        """Per-tower blocks ``[M_t, b_t, q, q]`` -> stored DCRC tensor ``[M, S, q, q]``."""
        parts = []
        for name in DCRC_TOWER_ORDER:
            part = per_tower[name]
            if not self._full_depth(name):
                full = part.new_zeros(self.num_positions, *part.shape[1:])
                part = full.index_copy(0, self.positions[name].to(part.device), part)
            parts.append(part)
        return torch.cat(parts, dim=1)

    def split(self, stored: Tensor) -> Dict[str, Tensor]:
        """Stored DCRC tensor ``[M, S, q, q]`` -> per-tower blocks ``[M_t, b_t, q, q]``."""
        sizes = [self.towers[name].width // self.block_size for name in DCRC_TOWER_ORDER]
        out = {}
        for name, part in zip(DCRC_TOWER_ORDER, stored.split(sizes, dim=1)):
            if not self._full_depth(name):
                part = part.index_select(0, self.positions[name].to(part.device))
            out[name] = part
        return out


class FrozenStacks:
    """The frozen target weights, stacked in the layout of the batched block products.

    Built once and kept while the frozen weights are unchanged (same storage and version
    counter), frozen and of the requested dtype: the per-step cost is then zero and the kept
    tensor is the very tensor the backward pass would keep alive anyway.

    Args:
        block_size (int): ``q``.
        enabled (bool): keep the stacks between calls (``cache_frozen``).
        store (dict | None): the dict to keep them in (the adapter's ``_frozen_cache``).
    """

    def __init__(self, block_size: int, enabled: bool = True, store: Optional[dict] = None):
        self.block_size, self.enabled = block_size, enabled
        self.store = {} if store is None else store

    def get(self, clip: nn.Module, spec: TowerSpec, kind: str, side: str,
            dtype: Optional[torch.dtype]) -> Tensor:
        """``[L, n, b, d, q]`` (side 'input': the q-column blocks of every weight) or
        ``[L, n, b, q, d]`` (side 'output': the q-row blocks) for ``kind`` 'in'
        (``attn.in_proj_weight``, n = 3) or 'out' (``attn.out_proj.weight``, n = 1)."""
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
            self.enabled and dtype == params[0].dtype and
            not any(p.requires_grad for p in params) and not torch.is_inference_mode_enabled())
        key = (spec.name, kind, side)
        stamp = (dtype, params[0].device, tuple((p.data_ptr(), p._version) for p in params))
        hit = self.store.pop(key, None)
        if cacheable and hit is not None and hit[0] == stamp:
            self.store[key] = hit
            return hit[1]
        weight = torch.stack(params).to(dtype)  # [L, n d, d]
        if side == 'input':
            weight = weight.view(L, n, d, b, q).permute(0, 1, 3, 2, 4).contiguous()
        else:
            weight = weight.view(L, n, b, q, d)
        if cacheable:
            self.store[key] = (stamp, weight)
        return weight


def block_product(frozen: Tensor, blocks: Tensor, side: str, dtype: torch.dtype) -> Tensor:
    """``W · B`` or ``B · W`` for a batch of weights, as one ``bmm`` (Eq. 4-5), plain autograd.

    Args:
        frozen (Tensor): ``[N, b, d_out, q]`` (input side) or ``[N, b, q, d_in]`` (output side).
        blocks (Tensor): ``[N, b, q, q]``.
        side (str): 'input' or 'output'.
        dtype (torch.dtype): dtype of the result (formed in fp32, fp64 for fp64 inputs).

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
        return torch.bmm(blocks, frozen.reshape(N * b, q, d_in)).to(dtype).view(N, b * q, d_in)


def tower_weights(clip: nn.Module, spec: TowerSpec, blocks: Tensor, targets: Sequence[str],
                  sides: Mapping[str, str], stacks: FrozenStacks,
                  dtype: Optional[torch.dtype] = None) -> Dict[str, Tensor]:
    """Transformed ``in_proj_weight`` / ``out_proj.weight`` of every layer of one tower.

    Args:
        clip (nn.Module): the model holding the frozen weights.
        spec (TowerSpec): the tower.
        blocks (Tensor): ``[L, n_targets, b, q, q]`` final blocks.
        targets (Sequence[str]): the adapter's targets, in the order of ``blocks``' dim 1.
        sides (Mapping[str, str]): target -> 'input' | 'output'.
        stacks (FrozenStacks): the frozen weights in product layout.
        dtype (torch.dtype | None): dtype of the returned weights (default: the frozen
            weights' own); they are formed in fp32 whatever it is.

    Returns:
        dict[str, Tensor]: parameter name -> transformed weight.
    """
    L, d = spec.num_layers, spec.width
    pos = {t: i for i, t in enumerate(targets)}
    result = {}
    qkv = [t for t in QKV if t in pos]
    if qkv:
        qkv_sides = {sides[t] for t in qkv}
        if len(qkv) == 3 and len(qkv_sides) == 1:  # one product for q, k, v of every layer
            side = qkv_sides.pop()
            frozen = stacks.get(clip, spec, 'in', side, None)
            out_dtype = dtype or frozen.dtype
            r = blocks[:, pos['q']:pos['q'] + 3]  # [L, 3, b, q, q]
            if frozen.requires_grad:  # trainable CLIP weights: plain autograd
                new_in = block_product(frozen.flatten(0, 1), r.flatten(0, 1), side, out_dtype)
                new_in = new_in.view(L, 3 * d, d).unbind(0)
            else:
                new_in = layerwise_block_product(frozen, r, side, out_dtype)
        else:
            pieces = []
            for i, t in enumerate(QKV):
                side = sides.get(t, 'output')
                frozen = stacks.get(clip, spec, 'in', side, None)[:, i]
                out_dtype = dtype or frozen.dtype
                if t in pos:
                    pieces.append(block_product(frozen, blocks[:, pos[t]], side, out_dtype))
                else:  # untargeted slice: the frozen rows themselves
                    pieces.append(frozen.reshape(L, d, d).to(out_dtype))
            new_in = torch.stack(pieces, dim=1).view(L, 3 * d, d).unbind(0)
        result.update(zip(spec.in_proj_names, new_in))
    if 'out' in pos:
        side = sides['out']
        frozen = stacks.get(clip, spec, 'out', side, None)
        out_dtype = dtype or frozen.dtype
        r = blocks[:, pos['out']:pos['out'] + 1]  # [L, 1, b, q, q]
        if frozen.requires_grad:
            new_out = block_product(frozen[:, 0], r[:, 0], side, out_dtype).unbind(0)
        else:
            new_out = layerwise_block_product(frozen, r, side, out_dtype)
        result.update(zip(spec.out_proj_names, new_out))
    return result
