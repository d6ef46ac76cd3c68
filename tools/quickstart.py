"""Quickstart: open-vocabulary segmentation on the embedded shapes world, three ways.

Runs on CPU without downloads:

1. the tiny CLIP pretrained on captioned shape scenes (shipped,
   ``mmseg_hclip/quickstart/tiny_clip_shapes.pt``; rebuilt with
   ``tools/quickstart/pretrain_tiny_clip.py`` if missing): its zero-shot
   retrieval / classification accuracy on held-out scenes;
2. the shapes segmentation dataset (training labels only the 8 seen names;
   validation adds 4 unseen combinations of seen words);
3. ``tools/train.py`` for each setting x seed, on the seen classes:
   frozen CLIP + head, fine-tuning of all CLIP attention weights + head
   (``projects/peft_baselines``), H-CLIP (POF + DCRC) + head;
4. ``tools/test.py`` on the final checkpoint of each setting's first seed
   (prediction masks for the overlays; its scores must equal the run's last
   validation);
5. the table (seen / unseen / harmonic mIoU, mean ± std over seeds), a bar chart,
   the training curves and upscaled overlays with a legend.

Usage::

    python tools/quickstart.py                      # 3 settings x 3 seeds
    python tools/quickstart.py --fast               # H-CLIP, one seed
    python tools/quickstart.py --settings frozen hclip --seeds 2 --jobs 1
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time
from collections import OrderedDict

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SETTINGS = OrderedDict([
    ('frozen', ('configs/quickstart/frozen_tiny_shapes.py', 'frozen CLIP + head')),
    ('attn-ft', ('configs/quickstart/attn-ft_tiny_shapes.py', 'attention FT + head')),
    ('hclip', ('configs/quickstart/hclip_tiny_shapes.py', 'H-CLIP + head')),
])
LABELS = {k: v[1] for k, v in SETTINGS.items()}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--settings', nargs='+', choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument('--seeds', type=int, default=3, help='seeds per setting (0, 1, ...)')
    parser.add_argument('--fast', action='store_true',
                        help='one setting, one seed: --settings hclip --seeds 1')
    parser.add_argument('--jobs', type=int, default=min(2, os.cpu_count() or 1),
                        help='runs in parallel (one intra-op thread each)')
    parser.add_argument('--iters', type=int, default=None,
                        help="training iterations (default: the configs')")
    parser.add_argument('--work-dir', default=osp.join(ROOT, 'work_dirs', 'quickstart'))
    parser.add_argument('--num-overlays', type=int, default=4)
    args = parser.parse_args(argv)
    if args.fast:
        args.settings, args.seeds = ['hclip'], 1
    for name in ('seeds', 'jobs', 'num_overlays'):
        if getattr(args, name) < (0 if name == 'num_overlays' else 1):
            parser.error(f'--{name.replace("_", "-")}={getattr(args, name)} is too small')
    if args.iters is not None and args.iters < 1:
        parser.error(f'--iters={args.iters} must be positive')
    return args


def load_average():
    return '%.2f %.2f %.2f' % os.getloadavg()


class Job:
    """One tool run in a subprocess, its output in a log file."""

    def __init__(self, name, cmd, log_path):
        self.name, self.cmd, self.log_path = name, cmd, log_path
        self.proc, self.start, self.seconds = None, None, None

    def launch(self):
        env = dict(os.environ, PYTHONUNBUFFERED='1', PYTHONPATH=ROOT + os.pathsep +
                   os.environ.get('PYTHONPATH', ''))
        # One intra-op thread per run: the tiny model's ops are too small to gain from more,
        # and runs in parallel (one per core) use the cores better than threads that spin.
        env.setdefault('OMP_NUM_THREADS', '1')
        env.setdefault('MKL_NUM_THREADS', env['OMP_NUM_THREADS'])
        self.log = open(self.log_path, 'w')
        self.log.write('$ ' + ' '.join(self.cmd) + '\n')
        self.log.flush()
        self.start = time.time()
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def poll(self):
        rc = self.proc.poll()
        if rc is not None and self.seconds is None:
            self.seconds = time.time() - self.start
            self.log.close()
        return rc


def run_jobs(jobs, parallel, on_done=None):
    """Run ``jobs`` with at most ``parallel`` at a time; stop all and exit on a failure."""
    pending, running = list(jobs), []
    while pending or running:
        while pending and len(running) < parallel:
            job = pending.pop(0)
            print(f'  start  {job.name}   (log: {osp.relpath(job.log_path, ROOT)})', flush=True)
            job.launch()
            running.append(job)
        time.sleep(0.2)
        for job in list(running):
            rc = job.poll()
            if rc is None:
                continue
            running.remove(job)
            if rc != 0:
                for other in running:
                    other.proc.kill()
                with open(job.log_path) as f:
                    tail = f.readlines()[-25:]
                sys.stdout.write(''.join('    | ' + line for line in tail))
                raise SystemExit(f'{job.name} failed (exit code {rc}); full log: {job.log_path}')
            if on_done is not None:
                on_done(job)


def find_one(pattern, what):
    files = sorted(glob.glob(pattern, recursive=True), key=osp.getmtime)
    if not files:
        raise SystemExit(f'no {what} found ({pattern})')
    return files[-1]


def ensure_tiny_clip(cfg_path):
    """The pretrained tiny CLIP file named by the config: shipped, else built now."""
    from mmengine.config import Config
    cfg = Config.fromfile(cfg_path)
    path = cfg.model.backbone.pretrained
    if not osp.isfile(path):
        print(f'      {path} is missing: pretraining it now '
              '(tools/quickstart/pretrain_tiny_clip.py, several minutes)', flush=True)
        subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'quickstart',
                                                 'pretrain_tiny_clip.py'), '--out', path],
                       cwd=ROOT, check=True)
    return path


def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    work = osp.abspath(args.work_dir)
    os.makedirs(work, exist_ok=True)
    sys.path.insert(0, ROOT)
    sys.path.insert(0, osp.join(ROOT, 'tools', 'quickstart'))
    print(f'load average at start: {load_average()} ({os.cpu_count()} CPUs)', flush=True)
    from mmengine.config import Config

    from mmseg_hclip.quickstart import generate_shapes_dataset
    from pretrain_tiny_clip import format_eval, load_and_evaluate, sha256

    configs = {s: osp.join(ROOT, SETTINGS[s][0]) for s in args.settings}
    first_cfg = configs[args.settings[0]]

    print('[1/5] tiny CLIP pretrained on captioned shape scenes', flush=True)
    clip_path = ensure_tiny_clip(first_cfg)
    clip_eval = load_and_evaluate(clip_path, threads=1)
    print(f'      {osp.relpath(clip_path, ROOT)} ({osp.getsize(clip_path) / 2**20:.1f} MiB, '
          f'sha256 {sha256(clip_path)[:12]}...)')
    print('      ' + format_eval(clip_eval).replace('\n', '\n      '), flush=True)

    cfg = Config.fromfile(first_cfg)
    data_root = cfg.train_dataloader.dataset.data_root
    if not osp.isabs(data_root):
        data_root = osp.join(ROOT, data_root)
    print(f'[2/5] shapes dataset -> {data_root}', flush=True)
    meta = generate_shapes_dataset(data_root, **cfg.get('shapes_cfg', {}))
    print(f'      {meta["num_train"]} train images ({len(meta["seen_classes"])} seen names), '
          f'{meta["num_val"]} val images (+{len(meta["unseen_classes"])} unseen names: '
          f'{", ".join(meta["unseen_classes"])})', flush=True)

    iters = args.iters or cfg.train_cfg.max_iters
    overrides = []
    if args.iters is not None:
        overrides = [f'train_cfg.max_iters={iters}',
                     f'train_cfg.val_interval={max(1, iters // 4)}',
                     f'default_hooks.checkpoint.interval={iters}']
    py = sys.executable
    runs = []
    for seed in range(args.seeds):
        for s in args.settings:
            run_dir = osp.join(work, s, f'seed{seed}')
            cmd = [py, 'tools/train.py', configs[s], '--work-dir', run_dir, '--cfg-options',
                   f'randomness.seed={seed}'] + overrides
            runs.append(dict(setting=s, seed=seed, dir=run_dir,
                             job=Job(f'train {s:<8} seed {seed}', cmd, run_dir + '.log')))
    print(f'[3/5] training: {len(args.settings)} setting(s) x {args.seeds} seed(s), {iters} '
          f'iterations each, {args.jobs} in parallel (tools/train.py)', flush=True)
    by_job = {id(r['job']): r for r in runs}

    def finished(job):
        run = by_job[id(job)]
        scalars = read_run_scalars(run['dir'])
        vals = [(s, v) for s, v in scalars.get('mIoU_unseen', [])]
        final = {k: dict(scalars[k])[vals[-1][0]] for k in ('mIoU_seen', 'mIoU_unseen', 'hIoU')}
        run['metrics'], run['scalars'] = final, scalars
        print(f'  done   {job.name}   {job.seconds:5.0f} s   seen {final["mIoU_seen"]:5.1f}  '
              f'unseen {final["mIoU_unseen"]:5.1f}  harmonic {final["hIoU"]:5.1f}', flush=True)

    for r in runs:
        os.makedirs(osp.dirname(r['dir']), exist_ok=True)
    run_jobs([r['job'] for r in runs], args.jobs, on_done=finished)

    print('[4/5] tools/test.py on the final checkpoint of each setting (seed 0), '
          'prediction masks for the overlays', flush=True)
    tests = []
    for s in args.settings:
        run = next(r for r in runs if r['setting'] == s)
        with open(osp.join(run['dir'], 'last_checkpoint')) as f:
            ckpt = f.read().strip()
        test_dir = osp.join(work, s, 'test')
        cmd = [py, 'tools/test.py', configs[s], ckpt, '--work-dir', test_dir, '--out',
               osp.join(test_dir, 'pred')]
        tests.append(dict(setting=s, run=run, dir=test_dir,
                          job=Job(f'test  {s}', cmd, test_dir + '.log')))
    run_jobs([t['job'] for t in tests], args.jobs)
    for t in tests:
        metrics = json_metrics(t['dir'])
        t['metrics'] = metrics
        diffs = {k: (metrics[k], t['run']['metrics'][k]) for k in t['run']['metrics']
                 if abs(metrics[k] - t['run']['metrics'][k]) > 0.005}
        status = 'same scores as its last validation' if not diffs else \
            f'DIFFERS from its last validation: {diffs}'
        print(f'  {t["setting"]:<8} tools/test.py: {status}', flush=True)

    print('[5/5] table and figures', flush=True)
    from mmseg_hclip.quickstart import report
    summary = report.summarize(runs)
    table = report.format_table(summary, LABELS)
    bars = osp.join(work, 'miou_bars.png')
    curves_png = osp.join(work, 'training_curves.png')
    overlays_png = osp.join(work, 'overlays.png')
    report.plot_bars(summary, bars, LABELS,
                     title=f'shapes val, {iters} iterations, mean ± std over seeds')
    curves = OrderedDict()
    for r in runs:
        entry = curves.setdefault(r['setting'], {'loss': [], 'mIoU_seen': [], 'mIoU_unseen': []})
        for key in entry:
            entry[key].append(r['scalars'].get(key, []))
    report.plot_curves(curves, curves_png, LABELS)
    draw_overlays(tests, data_root, overlays_png, args.num_overlays, report)

    elapsed = time.time() - t0
    print(f'\nZero-shot tiny CLIP (before any segmentation training): '
          f'retrieval image->text {clip_eval["i2t_top1"]:.1f} %, text->image '
          f'{clip_eval["t2i_top1"]:.1f} %; single-shape classification {clip_eval["cls_all"]:.1f} '
          f'% (unseen names {clip_eval["cls_unseen"]:.1f} %)')
    print(f'\nResults on the shapes validation split (mIoU %, mean ± std over seeds; '
          f'measured now, this run):\n{table}')
    print(f'\nbar chart:       {bars}\ntraining curves: {curves_png}\noverlays:        '
          f'{overlays_png}\nlogs:            {work}\n'
          f'total time:      {elapsed:.0f} s   (load average now: {load_average()})')
    with open(osp.join(work, 'summary.json'), 'w') as f:
        json.dump(dict(
            tiny_clip=dict(path=clip_path, sha256=sha256(clip_path), zero_shot=clip_eval),
            iters=iters, settings=args.settings, seeds=args.seeds, jobs=args.jobs,
            runs=[dict(setting=r['setting'], seed=r['seed'], metrics=r['metrics'],
                       seconds=round(r['job'].seconds, 1)) for r in runs],
            summary={s: {k: v for k, v in e.items()} for s, e in summary.items()},
            test=[dict(setting=t['setting'], metrics=t['metrics']) for t in tests],
            seconds=round(elapsed, 1), load_average_end=load_average()), f, indent=1)


def read_run_scalars(run_dir):
    from mmseg_hclip.quickstart.report import read_scalars
    return read_scalars(find_one(osp.join(run_dir, '*', 'vis_data', 'scalars.json'),
                                 'scalars.json'))


def json_metrics(test_dir):
    with open(find_one(osp.join(test_dir, '*', '*.json'), 'metrics json')) as f:
        return json.load(f)


def draw_overlays(tests, data_root, path, num, report):
    """The first ``num`` validation images that contain an unseen class."""
    import numpy as np
    from PIL import Image

    from mmseg_hclip.quickstart import EVAL_CLASSES, UNSEEN_CLASSES
    if num == 0 or not tests:
        return
    ann_dir = osp.join(data_root, 'ann_dir', 'val')
    names = sorted(os.listdir(ann_dir))
    unseen_ids = [EVAL_CLASSES.index(c) for c in UNSEEN_CLASSES]
    chosen = [n for n in names
              if np.isin(np.array(Image.open(osp.join(ann_dir, n))), unseen_ids).any()][:num]
    images = [np.array(Image.open(osp.join(data_root, 'img_dir', 'val', n)).convert('RGB'))
              for n in chosen]
    gts = [np.array(Image.open(osp.join(ann_dir, n))) for n in chosen]
    preds = OrderedDict()
    for t in tests:
        pred_dir = osp.join(t['dir'], 'pred')
        preds[t['setting']] = [np.array(Image.open(find_one(
            osp.join(pred_dir, '**', n), f'prediction {n}'))) for n in chosen]
    # 12 mutually distinct colours unrelated to the shapes' own, so that classes stand apart
    distinct = ['#e6194b', '#3cb44b', '#ffe119', '#4363d8', '#f58231', '#911eb4', '#46f0f0',
                '#f032e6', '#bcf60c', '#fabebe', '#008080', '#9a6324']
    palette = [[30, 30, 30]] + [[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in distinct]
    report.plot_overlays(images, gts, preds, EVAL_CLASSES, palette, path,
                         unseen=UNSEEN_CLASSES, labels=LABELS, upscale=4)


if __name__ == '__main__':
    main()
