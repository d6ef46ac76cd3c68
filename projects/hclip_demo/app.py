"""Serve the H-CLIP web demo (Gradio): upload an image, type a vocabulary, get an overlay.

Examples (from the repository root)::

    python projects/hclip_demo/app.py configs/hclip_vitb16_ade150.py merged.pth
    python projects/hclip_demo/app.py configs/hclip_vitb16_ade150.py iter_80000.pth \
        --device cuda --port 7860
    python projects/hclip_demo/app.py configs/quickstart/hclip_tiny_shapes.py \
        work_dirs/hclip_tiny_shapes/iter_400.pth   # after tools/train.py on that config (toy model)

The checkpoint may be a training checkpoint or the output of tools/merge_weights.py (found
from its meta; same config). The page listens on 127.0.0.1 unless --host says otherwise.
"""
import argparse
import os
import os.path as osp
import pickle
import sys

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(osp.dirname(HERE))
for path in (HERE, ROOT):  # the demo package, and mmseg_hclip from a checkout
    if path not in sys.path:
        sys.path.insert(0, path)

os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')


def parse_args(argv=None):
    from mmengine.config import DictAction

    from hclip_demo.core import DEFAULT_MAX_PIXELS
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint',
                        help='checkpoint (training or tools/merge_weights.py output)')
    parser.add_argument('--device', default='cpu', help="'cpu' (default), 'cuda' or 'cuda:N'")
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to listen on (0.0.0.0: every interface)')
    parser.add_argument('--port', type=int, default=7860)
    parser.add_argument('--max-pixels', type=float, default=DEFAULT_MAX_PIXELS,
                        help=f'largest image accepted, in pixels (default {DEFAULT_MAX_PIXELS})')
    parser.add_argument('--max-file-size', default='50mb',
                        help='largest upload accepted by the server (default 50mb)')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='opacity of the painted segmentation in (0, 1]')
    parser.add_argument('--vocabulary', default=None,
                        help='initial text of the vocabulary box')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.neck.synonyms=average')
    return parser.parse_args(argv)


def build(args):
    """The segmenter and the page for parsed arguments (no server started)."""
    from hclip_demo.core import Segmenter
    from hclip_demo.ui import build_demo, describe
    from mmseg_hclip.apis import resolve_device

    if not 0 < args.opacity <= 1:
        raise ValueError(f'--opacity {args.opacity} must be in (0, 1].')
    if args.max_pixels < 1:
        raise ValueError(f'--max-pixels {args.max_pixels} must be positive.')
    device = resolve_device(args.device)
    segmenter = Segmenter.from_files(args.config, args.checkpoint, device=device,
                                     cfg_options=args.cfg_options,
                                     max_pixels=int(args.max_pixels))
    kwargs = dict(description=describe(args.config, args.checkpoint, segmenter),
                  opacity=args.opacity)
    if args.vocabulary is not None:
        kwargs['default_vocabulary'] = args.vocabulary
    return segmenter, build_demo(segmenter, **kwargs)


def main(argv=None):
    args = parse_args(argv)
    try:
        _, demo = build(args)
    except (OSError, ValueError, pickle.UnpicklingError) as err:
        raise SystemExit(f'projects/hclip_demo/app.py: error: {err}') from None
    demo.queue(default_concurrency_limit=1).launch(
        server_name=args.host, server_port=args.port, max_file_size=args.max_file_size,
        show_error=False, share=False)


if __name__ == '__main__':
    main()
