"""Tables and figures of the quickstart comparison (numpy + matplotlib; no mm* imports).

* :func:`summarize` / :func:`format_table`: seen / unseen / harmonic mIoU per setting as
  mean ± sample standard deviation over seeds;
* :func:`read_scalars`: loss and validation curves from mmengine's ``scalars.json``;
* :func:`plot_bars`, :func:`plot_curves`: the bar chart and the training curves;
* :func:`plot_overlays`: nearest-neighbour upscaled image / ground truth / predictions of
  each setting, with a colour legend of the class names (unseen names marked).
"""
import json
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ['METRIC_KEYS', 'summarize', 'format_table', 'read_scalars', 'mean_curve',
           'plot_bars', 'plot_curves', 'plot_overlays']

#: Metric keys of SeenUnseenIoUMetric shown in the table, with their column titles.
METRIC_KEYS: Tuple[Tuple[str, str], ...] = (('mIoU_seen', 'seen mIoU'),
                                            ('mIoU_unseen', 'unseen mIoU'),
                                            ('hIoU', 'harmonic'))


def summarize(runs: Sequence[Mapping],
              keys: Sequence[str] = tuple(k for k, _ in METRIC_KEYS)) -> Dict[str, Dict]:
    """Mean and sample standard deviation (ddof=1) of each metric per setting.

    Args:
        runs: One dict per run with ``setting`` (str), ``seed`` and ``metrics``
            (dict key -> value in %).
        keys: Metric keys to summarise.

    Returns:
        dict: setting -> {key: (mean, std), 'seeds': [...]} in first-seen order of
        the settings; std is NaN with one seed.
    """
    out: Dict[str, Dict] = {}
    for run in runs:
        entry = out.setdefault(run['setting'], {'seeds': [], '_values': {k: [] for k in keys}})
        entry['seeds'].append(run['seed'])
        for k in keys:
            if k not in run['metrics']:
                raise KeyError(f'run {run["setting"]} seed {run["seed"]} has no metric {k!r} '
                               f'(has {sorted(run["metrics"])})')
            entry['_values'][k].append(float(run['metrics'][k]))
    for entry in out.values():
        values = entry.pop('_values')
        for k, vals in values.items():
            arr = np.asarray(vals, np.float64)
            std = float(arr.std(ddof=1)) if len(arr) > 1 else float('nan')
            entry[k] = (float(arr.mean()), std)
    return out


def _pm(mean: float, std: float) -> str:
    return f'{mean:5.1f} ± {std:4.1f}' if math.isfinite(std) else f'{mean:5.1f}       '


def format_table(summary: Mapping[str, Mapping], labels: Optional[Mapping[str, str]] = None,
                 keys: Sequence[Tuple[str, str]] = METRIC_KEYS) -> str:
    """A plain-text table, one row per setting: ``mean ± std`` (std over seeds)."""
    labels = dict(labels or {})
    names = [labels.get(s, s) for s in summary]
    width = max([len('setting')] + [len(n) for n in names]) + 2
    lines = [f'{"setting":<{width}}' + ''.join(f'{title:>16}' for _, title in keys) + '   seeds']
    for setting, name in zip(summary, names):
        entry = summary[setting]
        lines.append(f'{name:<{width}}' + ''.join(f'{_pm(*entry[k]):>16}' for k, _ in keys) +
                     f'   {len(entry["seeds"])}')
    return '\n'.join(lines)


def read_scalars(path: str) -> Dict[str, List[Tuple[int, float]]]:
    """mmengine's ``vis_data/scalars.json`` -> {key: [(step, value), ...]} (sorted by step)."""
    series: Dict[str, List[Tuple[int, float]]] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            step = rec.get('step')
            for key, value in rec.items():
                if key != 'step' and isinstance(value, (int, float)):
                    series.setdefault(key, []).append((int(step), float(value)))
    return {k: sorted(v) for k, v in series.items()}


def mean_curve(curves: Sequence[Sequence[Tuple[int, float]]]):
    """Mean and std over runs at the steps all runs share.

    Returns:
        tuple: steps [n], mean [n], std [n] (zeros with one run) as numpy arrays.
    """
    if not curves:
        raise ValueError('mean_curve needs at least one curve')
    common = sorted(set.intersection(*[{s for s, _ in c} for c in curves]))
    vals = np.array([[dict(c)[s] for s in common] for c in curves], np.float64)
    std = vals.std(0, ddof=1) if len(curves) > 1 else np.zeros(len(common))
    return np.array(common), vals.mean(0), std


def _plt():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def plot_bars(summary: Mapping[str, Mapping], path: str,
              labels: Optional[Mapping[str, str]] = None,
              keys: Sequence[Tuple[str, str]] = METRIC_KEYS, title: str = '') -> None:
    """Grouped bars (one group per metric, one bar per setting), error bars = std."""
    plt = _plt()
    labels = dict(labels or {})
    settings = list(summary)
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    width = 0.8 / max(1, len(settings))
    x = np.arange(len(keys))
    for i, s in enumerate(settings):
        means = [summary[s][k][0] for k, _ in keys]
        stds = [summary[s][k][1] if math.isfinite(summary[s][k][1]) else 0 for k, _ in keys]
        bars = ax.bar(x + (i - (len(settings) - 1) / 2) * width, means, width, yerr=stds,
                      capsize=3, label=f'{labels.get(s, s)} (n={len(summary[s]["seeds"])})')
        ax.bar_label(bars, fmt='%.1f', fontsize=7, padding=2)
    ax.set_xticks(x, [title_ for _, title_ in keys])
    ax.set_ylabel('mIoU (%)')
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_curves(curves: Mapping[str, Mapping[str, Sequence]], path: str,
                labels: Optional[Mapping[str, str]] = None) -> None:
    """Training loss and validation seen / unseen mIoU against iterations, per setting.

    Args:
        curves: setting -> {'loss': [curve per seed], 'mIoU_seen': [...],
            'mIoU_unseen': [...]}, each curve a list of (step, value). Lines are
            means over seeds, bands ± one std.
        path: PNG to write.
    """
    plt = _plt()
    labels = dict(labels or {})
    panels = (('loss', 'training loss'), ('mIoU_seen', 'validation seen mIoU (%)'),
              ('mIoU_unseen', 'validation unseen mIoU (%)'))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, (key, title) in zip(axes, panels):
        for i, (setting, series) in enumerate(curves.items()):
            runs = [c for c in series.get(key, []) if c]
            if not runs:
                continue
            steps, mean, std = mean_curve(runs)
            colour = f'C{i}'
            marker = None if key == 'loss' else 'o'
            ax.plot(steps, mean, color=colour, marker=marker, ms=3, lw=1.2,
                    label=labels.get(setting, setting))
            if len(runs) > 1:
                ax.fill_between(steps, mean - std, mean + std, color=colour, alpha=0.2, lw=0)
        ax.set(xlabel='iteration', title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _colourise(label: np.ndarray, palette: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    out = np.zeros(label.shape + (3, ), np.uint8)
    valid = (label != ignore_index) & (label < len(palette))
    out[valid] = palette[label[valid]]
    return out


def plot_overlays(images: Sequence[np.ndarray], gts: Sequence[np.ndarray],
                  preds: Mapping[str, Sequence[np.ndarray]], classes: Sequence[str],
                  palette: Sequence[Sequence[int]], path: str,
                  unseen: Sequence[str] = (), labels: Optional[Mapping[str, str]] = None,
                  upscale: int = 4, alpha: float = 0.6) -> None:
    """Rows: images; columns: image, ground truth, then one prediction per setting.

    Label maps are drawn over the image (``alpha`` opacity) after nearest-neighbour
    upscaling by ``upscale``; the legend lists every class present, unseen ones marked
    "(unseen)".

    Args:
        images: RGB uint8 [H, W, 3].
        gts: Label maps [H, W] (indices into ``classes``).
        preds: setting -> label maps, same order as ``images``.
        classes: Class names; ``palette``: one RGB colour per class.
    """
    plt = _plt()
    from matplotlib.patches import Patch
    labels = dict(labels or {})
    palette = np.asarray(palette, np.uint8)
    if len(palette) < len(classes):
        raise ValueError(f'palette has {len(palette)} colours for {len(classes)} classes')
    for name, maps in preds.items():
        if len(maps) != len(images):
            raise ValueError(f'{len(maps)} predictions of {name!r} for {len(images)} images')
    cols = ['image', 'ground truth'] + [labels.get(s, s) for s in preds]
    rows = len(images)
    fig, axes = plt.subplots(rows, len(cols), figsize=(2.3 * len(cols), 2.3 * rows + 0.9),
                             squeeze=False)
    present = set()

    def up(a):
        return np.repeat(np.repeat(a, upscale, 0), upscale, 1)

    for r in range(rows):
        img = np.asarray(images[r], np.uint8)
        maps = [np.asarray(gts[r])] + [np.asarray(preds[s][r]) for s in preds]
        panels = [up(img)]
        for m in maps:
            present |= set(np.unique(m).tolist())
            blend = (1 - alpha) * img.astype(np.float32) + alpha * _colourise(m, palette)
            panels.append(up(blend.clip(0, 255).astype(np.uint8)))
        for c, panel in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(panel, interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
    unseen = set(unseen)
    handles = [Patch(color=palette[i] / 255.0,
                     label=classes[i] + (' (unseen)' if classes[i] in unseen else ''))
               for i in sorted(present) if 0 <= i < len(classes)]
    fig.legend(handles=handles, loc='lower center', ncol=min(5, max(1, len(handles))),
               fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.9 / (2.3 * rows + 0.9) + 0.02, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
