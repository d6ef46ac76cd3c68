"""H-CLIP's method in plain PyTorch (no mm* imports): POF, DCRC, hyperspherical energy,
tensor products, and the adapter that applies them to an open_clip ViT CLIP.

How to read ``peft/``:

1. :mod:`.reference` — the method as the paper writes it, one short function per equation
   (Cayley, ``diag(R)``, ``W·B`` / ``B·W``, the q×q×S×M block tensor, linear and MLP DCRC),
   dense and slow. Start here; the tests compare everything below with it.
2. :mod:`.adapter` — :class:`HCLIPAdapter`, the same computation fast for a whole CLIP, as
   wiring: settings checked in one place, the parameters, and per call one DCRC mixing, one
   batched Cayley solve and the weights. The fast parts live in :mod:`._engine` (private: the
   stored ``[M, S, q, q]`` layout, the cache of frozen weights in product layout, the batched
   block products per tower), :mod:`.dcrc` (relation maps on that layout),
   :mod:`.block_transforms` (Cayley solve and block products with hand-written backward
   passes, fp32 under autocast, single-threaded small solves), :mod:`.clip_towers` (where the
   q/k/v/out weights of open_clip live) and :mod:`.merging` (merge/unmerge for inference).
3. :mod:`.reporting` (energy drift and parameter counts of an adapter), :mod:`.energy`
   (hyperspherical energy, Eq. 1) and :mod:`.tensor_products` (the T-product theory of §3.2
   and supplementary A, which DCRC's mode products come from).

Map from the paper to the fast code (details in ``docs/method.md``):

==================  ======================================================================
Eq. 1 (§3.1)        :func:`hyperspherical_energy`, :func:`relative_energy_drift`
Eq. 2-3             :func:`cayley`
Eq. 4-5             :func:`apply_block_diagonal`, :meth:`HCLIPAdapter.forward`
Eq. 6-7             :meth:`HCLIPAdapter.dcrc_tensor`
Eq. 8-9             :func:`t_product` (with :func:`circ`, :func:`unfold`, :func:`fold`)
Eq. 10-15           :func:`transform_product`, :func:`t_product_dft`, :func:`mode_product`
Eq. 16-17           :class:`DCRC`, :class:`RelationMLP`
==================  ======================================================================
"""
from .adapter import (CAYLEY_CONVENTIONS, OFFICIAL_COMPAT, ORTHOGONAL, SIDE_PRESETS, TARGETS,
                      TRAIN_MODES, HCLIPAdapter, freeze_module)
from .block_transforms import (apply_block_diagonal, block_diagonal, cayley,
                               layerwise_block_product, skew)
from .clip_towers import TowerSpec, find_vit_towers
from .dcrc import DCRC, DCRC_VARIANTS, RelationMLP
from .energy import hyperspherical_energy, relative_energy_drift
from .merging import MergeableAdapterMixin
from .tensor_products import (circ, dft_matrix, fold, mode_product, mode_solve, slice_product,
                              t_product, t_product_dft, transform_product, unfold)

__all__ = [
    'MergeableAdapterMixin',
    'HCLIPAdapter', 'OFFICIAL_COMPAT', 'TARGETS', 'ORTHOGONAL', 'SIDE_PRESETS', 'TRAIN_MODES',
    'CAYLEY_CONVENTIONS', 'DCRC_VARIANTS', 'freeze_module', 'cayley', 'skew', 'block_diagonal',
    'apply_block_diagonal', 'layerwise_block_product', 'find_vit_towers', 'TowerSpec', 'DCRC',
    'RelationMLP', 'hyperspherical_energy', 'relative_energy_drift', 'circ', 'unfold', 'fold',
    't_product',
    't_product_dft', 'mode_product', 'mode_solve', 'slice_product', 'transform_product',
    'dft_matrix'
]
