"""Quickstart: H-CLIP trains and evaluates end to end on the embedded shapes dataset.

Runs on CPU without downloads (tiny CLIP with random weights, synthetic data):

1. generates the shapes dataset (seen names for training, seen + unseen for evaluation);
2. evaluates the untrained model with ``tools/test.py``;
3. trains with ``tools/train.py``;
4. evaluates the trained model with ``tools/test.py`` (and draws overlays);
5. prints seen / unseen mIoU before and after training, writes a training
   curve (loss and mIoU against iterations) and a few overlays as PNG.

Usage::

    python tools/quickstart.py [--work-dir work_dirs/quickstart] [--iters N]
"""
import argparse
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'quickstart', 'hclip_tiny_shapes.py')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default=CONFIG, help='quickstart config')
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'quickstart'))
    parser.add_argument('--iters', type=int, default=None,
                        help='training iterations (default: the config\'s)')
    parser.add_argument('--num-overlays', type=int, default=4)
    return parser.parse_args()


def run(cmd, log_path):
    """Run a tool, streaming its output to the terminal and a log file."""
    print('$ ' + ' '.join(cmd), flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    # One intra-op thread: the tiny model's ops are too small to gain from more, and on a
    # 2-core machine shared with the dataloader worker, OpenMP threads spinning against each
    # other made a step 5-10x slower (measured: 0.7 s vs 4-8 s under load).
    env.setdefault('OMP_NUM_THREADS', '1')
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            log.write(line)
            if ' - mmengine - ' in line and ('Iter(' in line or 'mIoU' in line) \
                    or 'Error' in line or 'Traceback' in line:
                sys.stdout.write('  ' + line.split(' - mmengine - ')[-1])
                sys.stdout.flush()
        if proc.wait() != 0:
            raise SystemExit(f'command failed ({proc.returncode}); full log: {log_path}')


def latest_metrics(work_dir):
    """The metrics json that tools/test.py wrote under work_dir."""
    files = sorted(glob.glob(osp.join(work_dir, '*', '*.json')), key=osp.getmtime)
    if not files:
        raise SystemExit(f'no metrics json found under {work_dir}')
    with open(files[-1]) as f:
        return json.load(f)


def save_untrained_checkpoint(cfg_path, work_dir, path):
    """Save the model exactly as training starts it (same seed, same init)."""
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner

    from mmseg_hclip.utils import setup_runtime
    cfg = Config.fromfile(cfg_path)
    cfg.work_dir = work_dir
    cfg.log_level = 'WARNING'  # this runner only initialises the model
    setup_runtime(cfg)
    runner = Runner.from_cfg(cfg)
    runner.model.init_weights()
    torch.save({'meta': {'iter': 0, 'dataset_meta': runner.train_dataloader.dataset.metainfo},
                'state_dict': runner.model.state_dict()}, path)


def plot_curves(train_work_dir, out_png, initial=None):
    """Loss and validation mIoU against iterations, from mmengine's scalars.json.

    ``initial``: metrics of the untrained model, drawn at iteration 0.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    files = sorted(glob.glob(osp.join(train_work_dir, '*', 'vis_data', 'scalars.json')),
                   key=osp.getmtime)
    if not files:
        raise SystemExit(f'no scalars.json under {train_work_dir}; was LocalVisBackend on?')
    loss, miou = [], []
    if initial:
        miou.append((0, initial['mIoU'], initial.get('mIoU_seen'), initial.get('mIoU_unseen')))
    with open(files[-1]) as f:
        for line in f:
            rec = json.loads(line)
            if 'loss' in rec:
                loss.append((rec['step'], rec['loss']))
            if 'mIoU' in rec:
                miou.append((rec['step'], rec['mIoU'], rec.get('mIoU_seen'),
                             rec.get('mIoU_unseen')))
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    if loss:
        ax[0].plot(*zip(*loss), lw=1)
    ax[0].set(xlabel='iteration', ylabel='training loss', title='loss')
    if miou:
        steps = [m[0] for m in miou]
        ax[1].plot(steps, [m[1] for m in miou], 'o-', label='mIoU (all)')
        if miou[0][2] is not None:
            ax[1].plot(steps, [m[2] for m in miou], 's-', label='mIoU seen')
            ax[1].plot(steps, [m[3] for m in miou], '^-', label='mIoU unseen')
        ax[1].legend()
    ax[1].set(xlabel='iteration', ylabel='mIoU (%)', title='validation')
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def main():
    args = parse_args()
    t0 = time.time()
    work = osp.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    sys.path.insert(0, ROOT)
    from mmengine.config import Config

    from mmseg_hclip.quickstart import generate_shapes_dataset
    cfg = Config.fromfile(args.config)
    data_root = cfg.train_dataloader.dataset.data_root
    if not osp.isabs(data_root):
        data_root = osp.join(ROOT, data_root)
    print(f'[1/5] shapes dataset -> {data_root}', flush=True)
    meta = generate_shapes_dataset(data_root, **cfg.get('shapes_cfg', {}))
    print(f'      {meta["num_train"]} train images ({len(meta["seen_classes"])} seen names), '
          f'{meta["num_val"]} val images (+{len(meta["unseen_classes"])} unseen names: '
          f'{", ".join(meta["unseen_classes"])})', flush=True)

    py = sys.executable
    overrides = []
    if args.iters is not None:
        overrides = ['--cfg-options', f'train_cfg.max_iters={args.iters}',
                     f'train_cfg.val_interval={max(1, args.iters // 4)}']

    print('[2/5] evaluating the untrained model (tools/test.py)', flush=True)
    init_ckpt = osp.join(work, 'untrained.pth')
    save_untrained_checkpoint(args.config, osp.join(work, 'init'), init_ckpt)
    run([py, 'tools/test.py', args.config, init_ckpt, '--work-dir', osp.join(work, 'eval_untrained')]
        + overrides, osp.join(work, 'eval_untrained.log'))
    before = latest_metrics(osp.join(work, 'eval_untrained'))

    print('[3/5] training (tools/train.py)', flush=True)
    train_dir = osp.join(work, 'train')
    run([py, 'tools/train.py', args.config, '--work-dir', train_dir] + overrides,
        osp.join(work, 'train.log'))
    with open(osp.join(train_dir, 'last_checkpoint')) as f:
        ckpt = f.read().strip()

    print('[4/5] evaluating the trained model (tools/test.py --show-dir)', flush=True)
    eval_dir = osp.join(work, 'eval_trained')
    show_dir = osp.join(work, 'show')
    run([py, 'tools/test.py', args.config, ckpt, '--work-dir', eval_dir, '--show-dir', show_dir]
        + overrides, osp.join(work, 'eval_trained.log'))
    after = latest_metrics(eval_dir)

    print('[5/5] plots', flush=True)
    curve = osp.join(work, 'training_curve.png')
    plot_curves(train_dir, curve, initial=before)
    overlay_dir = osp.join(work, 'overlays')
    os.makedirs(overlay_dir, exist_ok=True)
    drawn = sorted(glob.glob(osp.join(show_dir, '**', '*.png'), recursive=True) +
                   glob.glob(osp.join(eval_dir, '**', 'vis_image', '*.png'), recursive=True))
    for src in drawn[:args.num_overlays]:
        shutil.copy(src, overlay_dir)

    keys = ('mIoU_seen', 'mIoU_unseen', 'hIoU', 'mIoU', 'aAcc')
    print('\nResults on the shapes validation split (measured now, this run):')
    print(f'{"model":<12}' + ''.join(f'{k:>13}' for k in keys))
    for name, m in (('untrained', before), ('trained', after)):
        print(f'{name:<12}' + ''.join(f'{m.get(k, float("nan")):>13.2f}' for k in keys))
    print(f'\ntraining curve: {curve}\noverlays:       {overlay_dir} '
          f'({len(os.listdir(overlay_dir))} PNG)\nlogs:           {work}\n'
          f'total time:     {time.time() - t0:.0f} s')
    with open(osp.join(work, 'summary.json'), 'w') as f:
        json.dump({'untrained': before, 'trained': after, 'seconds': time.time() - t0}, f,
                  indent=1)


if __name__ == '__main__':
    main()
