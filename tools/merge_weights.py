"""Fold the H-CLIP adapter into the CLIP weights of a checkpoint (zero-overhead inference).

Example::

    python tools/merge_weights.py configs/hclip_vitb16_coco-stuff.py \
        work_dirs/hclip/iter_80000.pth work_dirs/hclip/merged.pth

writes

- ``merged.pth``: the checkpoint with the transforms folded into the CLIP weights and no
  adapter parameters (``meta['hclip_merged'] = True``). ``tools/demo.py`` and
  ``mmseg_hclip.apis.init_model`` load it with the same config (the model is then built
  without adapter); it gives the same logits as the training checkpoint.
- ``merged_open_clip.pth``: the tuned CLIP alone, a plain open_clip state dict, and
  ``merged_open_clip.json``: its open_clip model config (architecture at the trained input
  size, activation). Load it with::

      import open_clip
      open_clip.add_model_config('work_dirs/hclip/merged_open_clip.json')
      clip = open_clip.create_model('merged_open_clip',
                                    pretrained='work_dirs/hclip/merged_open_clip.pth')

  or ``open_clip.CLIP(**json.load(f)).load_state_dict(torch.load(...))`` (inline
  architectures too). For a named architecture, ``open_clip.create_model('ViT-B-16',
  pretrained=..., force_quick_gelu=True, force_image_size=384)`` is the same model.
"""
import argparse
import os.path as osp
import pickle
import sys

from mmengine.config import DictAction

try:
    import mmseg_hclip  # noqa: F401
except ImportError:  # running from a checkout without installing the package
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    import mmseg_hclip  # noqa: F401

from mmseg_hclip.apis import merge_checkpoint


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Merge the H-CLIP adapter into the CLIP weights of a checkpoint')
    parser.add_argument('config', help='the config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='training checkpoint (adapter + pretrained CLIP)')
    parser.add_argument('out', help='merged checkpoint to write (.pth)')
    parser.add_argument(
        '--open-clip-out',
        help='open_clip state dict to write (default: OUT with the suffix _open_clip.pth; '
        'its model config goes beside it as .json)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        paths = merge_checkpoint(args.config, args.checkpoint, args.out,
                                 open_clip_out=args.open_clip_out,
                                 cfg_options=args.cfg_options)
    except (OSError, ValueError, pickle.UnpicklingError) as err:
        raise SystemExit(f'tools/merge_weights.py: error: {err}') from None
    name = osp.splitext(osp.basename(paths['open_clip_config']))[0]
    print(f"merged checkpoint:       {paths['checkpoint']}")
    print(f"open_clip state dict:    {paths['open_clip']}")
    print(f"open_clip model config:  {paths['open_clip_config']}")
    print('load the CLIP with open_clip:\n'
          f"  open_clip.add_model_config({paths['open_clip_config']!r})\n"
          f"  clip = open_clip.create_model({name!r}, pretrained={paths['open_clip']!r})")
    return paths


if __name__ == '__main__':
    main()
