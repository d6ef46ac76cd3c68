"""Segment one image with any vocabulary and save the prediction overlaid on it.

Examples::

    python tools/demo.py demo.jpg --vocabulary "cat,sofa,wall" \
        --config configs/hclip_vitb16_ade150.py --checkpoint iter_80000.pth --out out.png
    python tools/demo.py demo.jpg --vocabulary-file mmseg_hclip/data/classnames/ade150.json \
        --config configs/hclip_vitb16_ade150.py --checkpoint merged.pth --out out.png

``--vocabulary``: commas separate classes. ``--vocabulary-file``: a JSON list (synonyms of
one class joined by ", ") or one class per line. The checkpoint may be a training checkpoint
or one written by tools/merge_weights.py (recognised from its meta; same config).
The drawing is MMSeg's SegLocalVisualizer overlay with the class names on their regions and a
legend of the classes present (largest first), at the image's size.
"""
import argparse
import os.path as osp
import pickle
import sys
import time

from mmengine.config import DictAction

try:
    import mmseg_hclip  # noqa: F401
except ImportError:  # running from a checkout without installing the package
    sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
    import mmseg_hclip  # noqa: F401

from mmseg_hclip.apis import (init_model, inference_model, load_image, parse_vocabulary,
                              resolve_device, show_result)
from mmseg_hclip.utils.memory import (fit_drawing_to_memory, fit_inference_to_memory,
                                      restore_prediction_size)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Open-vocabulary segmentation of one image with an H-CLIP checkpoint')
    parser.add_argument('img', help='image file')
    vocab = parser.add_mutually_exclusive_group(required=True)
    vocab.add_argument('--vocabulary', help='class names separated by commas: "cat,sofa,wall"')
    vocab.add_argument(
        '--vocabulary-file',
        help='a JSON list of class names or a text file with one class per line '
        '(", " inside a name joins synonyms)')
    parser.add_argument('--config', required=True, help='model config file')
    parser.add_argument(
        '--checkpoint', required=True,
        help='checkpoint file (training checkpoint or tools/merge_weights.py output)')
    parser.add_argument('--out', required=True, help='output image (PNG)')
    parser.add_argument('--device', default='cpu', help="'cpu' (default), 'cuda' or 'cuda:N'")
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='opacity of the painted segmentation in (0, 1] (default 0.5)')
    parser.add_argument('--no-labels', action='store_true',
                        help='do not write class names on the regions')
    parser.add_argument('--no-legend', action='store_true',
                        help='do not draw the legend box (top-left corner)')
    parser.add_argument(
        '--memory-budget', type=float, default=4.0,
        help='GiB the run may use (estimated): when the config\'s test_cfg.mode would need '
        'more for this image and vocabulary, \'reference\' mode is used, on a smaller copy '
        'of the image if needed (default 4)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. model.test_cfg.mode=whole')
    return parser.parse_args(argv)


def run(args) -> dict:
    """Run the demo; returns the drawing, the classes present and the prediction."""
    if not 0 < args.opacity <= 1:
        raise ValueError(f'--opacity {args.opacity} must be in (0, 1].')
    # cheap checks first: nothing is built before the inputs are known to be good
    vocabulary = parse_vocabulary(args.vocabulary, args.vocabulary_file)
    image = load_image(args.img)
    device = resolve_device(args.device)
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint!r} does not exist; pass the .pth '
                                'file written by tools/train.py or tools/merge_weights.py.')
    model = init_model(args.config, args.checkpoint, device=device,
                       cfg_options=args.cfg_options)
    run_image, memory_note = fit_inference_to_memory(model, image, len(vocabulary),
                                                     args.memory_budget)
    if memory_note:
        print(memory_note)
    start = time.perf_counter()
    result = restore_prediction_size(inference_model(model, run_image, vocabulary),
                                     image.shape[:2])
    seconds = time.perf_counter() - start
    with_labels, drawing_note = fit_drawing_to_memory(result, len(vocabulary),
                                                      not args.no_labels, args.memory_budget)
    if drawing_note:
        print(drawing_note)
    drawn, present = show_result(
        image, result, vocabulary, opacity=args.opacity, with_labels=with_labels,
        legend=not args.no_legend, out_file=args.out)
    weights = ('no adapter: merged checkpoint or frozen CLIP' if model.backbone.adapter is None
               else 'adapter folded into the CLIP weights for inference')
    print(f'{args.img}: {image.shape[1]}x{image.shape[0]}, {len(vocabulary)} classes, '
          f'inference {seconds:.2f} s on {device} ({weights})')
    for label, fraction in present:
        print(f'  {vocabulary[label]:<30s} {100 * fraction:6.2f} %')
    print(f'saved {args.out}')
    return dict(drawing=drawn, present=present, result=result, vocabulary=vocabulary)


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except (OSError, ValueError, pickle.UnpicklingError) as err:
        raise SystemExit(f'tools/demo.py: error: {err}') from None


if __name__ == '__main__':
    main()
