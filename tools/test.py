"""Test (evaluate) a segmentor with MMEngine's runner (MMSegmentation 1.x interface).

Example::

    python tools/test.py configs/hclip_vitb16_ade847.py work_dirs/hclip/iter_80000.pth
    bash tools/dist_test.sh configs/hclip_vitb16_ade847.py CKPT 4 --show-dir vis
"""
import argparse
import os
import os.path as osp
import pickle
import sys

# The repository root on sys.path, so configs can import projects/* packages
# (custom_imports) without PYTHONPATH=. (tools/dist_*.sh set it too).
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.model import is_model_wrapper  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmseg_hclip.apis.inference import (check_state_dict, is_merged_checkpoint,  # noqa: E402
                                        read_checkpoint)
from mmseg_hclip.engine.model_settings import (ModelSettingsMismatchError,  # noqa: E402
                                               check_model_settings)
from mmseg_hclip.utils import check_cfg_options, setup_runtime  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a segmentor')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--work-dir',
        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out',
        type=str,
        help='the directory to save the output prediction masks (PNG) for offline evaluation')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument(
        '--show-dir',
        help='directory where painted images will be saved. If specified, it will be '
        'automatically saved to the work_dir/timestamp/show_dir')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, the key-value pair '
        'in xxx=yyy format will be merged into config file. If the value to '
        'be overwritten is a list, it should be like key="[a,b]" or key=a,b '
        'It also allows nested list/tuple values, e.g. key="[(a,b),(c,d)]" '
        'Note that the quotation marks are necessary and that no white space '
        'is allowed.')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--tta', action='store_true', help='test time augmentation')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def trigger_visualization_hook(cfg, args):
    default_hooks = cfg.default_hooks
    if 'visualization' not in default_hooks:
        raise RuntimeError(
            'VisualizationHook must be included in default_hooks to use --show or '
            "--show-dir; add visualization=dict(type='SegVisualizationHook') to "
            'default_hooks in the config.')
    visualization_hook = default_hooks['visualization']
    visualization_hook['draw'] = True
    if args.show:
        visualization_hook['show'] = True
        visualization_hook['wait_time'] = args.wait_time
    if args.show_dir:
        visualizer = cfg.visualizer
        visualizer['save_dir'] = args.show_dir
    return cfg


def adapt_model_to_checkpoint(cfg, checkpoint):
    """Build an H-CLIP model the way the checkpoint needs it.

    The checkpoint holds every CLIP weight, so the backbone is built without
    ``pretrained`` (no download, works offline). A checkpoint written by
    ``tools/merge_weights.py`` has the transforms folded in: its model is built
    without the adapter.
    """
    backbone = cfg.model.get('backbone', None)
    if not backbone or backbone.get('type') != 'HCLIPBackbone':
        return
    backbone['pretrained'] = None
    _, meta = read_checkpoint(checkpoint, mmap=True)
    if is_merged_checkpoint(meta):
        backbone['adapter'] = None


def main():
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint {args.checkpoint!r} does not exist; pass the path of a '
                         '.pth file written by tools/train.py or tools/merge_weights.py')
    try:  # an unreadable, unsafe or foreign file is named before anything is built
        read_checkpoint(args.checkpoint, mmap=True)
    except (ValueError, pickle.UnpicklingError) as err:
        raise SystemExit(f'tools/test.py: error: {err}') from None
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        check_cfg_options(cfg, args.cfg_options)  # a misspelt key is an error, not a no-op
        cfg.merge_from_dict(args.cfg_options)

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    cfg.load_from = args.checkpoint
    adapt_model_to_checkpoint(cfg, args.checkpoint)

    if args.show or args.show_dir:
        cfg = trigger_visualization_hook(cfg, args)

    if args.tta:
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model

    if args.out is not None:
        cfg.test_evaluator['output_dir'] = args.out
        cfg.test_evaluator['keep_results'] = True

    setup_runtime(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    # mmengine loads non-strictly (a checkpoint of another model only warns): require a fit.
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    state_dict, meta = read_checkpoint(args.checkpoint, mmap=True)
    try:  # first the settings that give the weights their meaning (adapter, prompts, head)
        check_model_settings(model, meta, source=f'checkpoint {args.checkpoint}',
                             target=f'the config {args.config}' +
                             (' with the given --cfg-options' if args.cfg_options else ''))
    except ModelSettingsMismatchError as err:
        raise SystemExit(f'tools/test.py: error: {err}') from None
    check_state_dict(model, state_dict,
                     source=f'checkpoint {args.checkpoint}', target=f'the model of {args.config}')
    runner.test()


if __name__ == '__main__':
    main()
