"""Train a segmentor with MMEngine's runner (MMSegmentation 1.x interface).

Example::

    python tools/train.py configs/hclip_vitb16_coco-stuff.py
    bash tools/dist_train.sh configs/hclip_vitb16_coco-stuff.py 4
"""
import argparse
import logging
import os
import os.path as osp
import sys

# The repository root on sys.path, so configs can import projects/* packages
# (custom_imports) without PYTHONPATH=. (tools/dist_*.sh set it too).
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

from mmseg_hclip.engine.checkpoint_io import (CheckpointUnreadableError,  # noqa: E402
                                              resolve_resume_checkpoint)
from mmseg_hclip.engine.model_settings import (ModelSettingsMismatchError,  # noqa: E402
                                               check_model_settings)
from mmseg_hclip.utils import check_cfg_options, setup_runtime  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        default=None,
        help='resume from a checkpoint: a path, or no value to resume from the '
        'latest checkpoint in the work dir')
    parser.add_argument(
        '--amp', action='store_true', default=False,
        help='enable automatic-mixed-precision training')
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
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def ensure_model_settings_hook(cfg) -> None:
    """Every checkpoint records the model settings that give its weights their meaning.

    The model configs list ``ModelSettingsHook`` in ``custom_hooks``; a child config that
    rewrites that list without it gets it back here (it only adds a record to the checkpoint
    meta and checks it on load).
    """
    hooks = list(cfg.get('custom_hooks', None) or [])
    if not any(isinstance(h, dict) and h.get('type') == 'ModelSettingsHook' for h in hooks):
        hooks.append(dict(type='ModelSettingsHook'))
        cfg.custom_hooks = hooks
        print_log('tools/train.py: added ModelSettingsHook to custom_hooks (checkpoints record '
                  'the model settings that give their weights their meaning)', logger='current')


def check_resume_settings(runner, checkpoint: str, config: str) -> None:
    """Refuse ``--resume`` onto a checkpoint trained with other model settings."""
    from mmseg_hclip.apis.inference import read_checkpoint
    _, meta = read_checkpoint(checkpoint, mmap=True)
    try:
        check_model_settings(runner.model, meta, source=f'checkpoint {checkpoint}',
                             target=f'the config {config}')
    except ModelSettingsMismatchError as err:
        raise SystemExit(f'tools/train.py: error: {err}') from None


def main():
    args = parse_args()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        check_cfg_options(cfg, args.cfg_options)  # a misspelt key is an error, not a no-op
        cfg.merge_from_dict(args.cfg_options)

    # work_dir priority: CLI > config > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        optim_wrapper = cfg.optim_wrapper.type
        if optim_wrapper == 'AmpOptimWrapper':
            print_log('AMP training is already enabled in your config.',
                      logger='current', level=logging.WARNING)
        else:
            assert optim_wrapper == 'OptimWrapper', (
                '`--amp` is only supported when the optimizer wrapper type is '
                f'`OptimWrapper` but got {optim_wrapper}.')
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'

    if args.resume is not None:
        cfg.resume = True
        requested = None if args.resume == 'auto' else args.resume
        try:  # a torn checkpoint is named and the newest readable one beside it is used
            cfg.load_from = resolve_resume_checkpoint(cfg.work_dir, requested)
        except (CheckpointUnreadableError, FileNotFoundError) as err:
            raise SystemExit(f'tools/train.py: error: {err}') from None

    ensure_model_settings_hook(cfg)
    setup_runtime(cfg)
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    if cfg.resume and cfg.load_from:
        check_resume_settings(runner, cfg.load_from, args.config)
    runner.train()


if __name__ == '__main__':
    main()
