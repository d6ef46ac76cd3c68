"""The quickstart's table and figures on tiny inputs (statistics from Python's own
``statistics`` module, figures read back as images)."""
import json
import math
import statistics

import numpy as np
import pytest
from PIL import Image

from mmseg_hclip.quickstart import report

RUNS = [
    dict(setting='frozen', seed=0, metrics=dict(mIoU_seen=50.0, mIoU_unseen=20.0, hIoU=28.57)),
    dict(setting='hclip', seed=0, metrics=dict(mIoU_seen=60.0, mIoU_unseen=30.0, hIoU=40.0)),
    dict(setting='frozen', seed=1, metrics=dict(mIoU_seen=54.0, mIoU_unseen=26.0, hIoU=35.1)),
    dict(setting='hclip', seed=1, metrics=dict(mIoU_seen=61.0, mIoU_unseen=25.0, hIoU=35.46)),
    dict(setting='frozen', seed=2, metrics=dict(mIoU_seen=52.5, mIoU_unseen=23.0, hIoU=31.99)),
]


def test_summarize_matches_statistics_module():
    summary = report.summarize(RUNS)
    assert list(summary) == ['frozen', 'hclip']
    for setting in summary:
        for key in ('mIoU_seen', 'mIoU_unseen', 'hIoU'):
            vals = [r['metrics'][key] for r in RUNS if r['setting'] == setting]
            mean, std = summary[setting][key]
            assert mean == pytest.approx(statistics.mean(vals))
            assert std == pytest.approx(statistics.stdev(vals))  # sample std (n - 1)
    assert summary['frozen']['seeds'] == [0, 1, 2]
    single = report.summarize(RUNS[:2])
    assert math.isnan(single['frozen']['mIoU_seen'][1])
    with pytest.raises(KeyError, match="no metric 'hIoU'"):
        report.summarize([dict(setting='x', seed=0, metrics=dict(mIoU_seen=1, mIoU_unseen=1))])


def test_format_table():
    text = report.format_table(report.summarize(RUNS), dict(frozen='frozen CLIP + head'))
    lines = text.splitlines()
    assert len(lines) == 3 and 'seen mIoU' in lines[0] and 'harmonic' in lines[0]
    assert lines[1].startswith('frozen CLIP + head')
    # frozen seen: mean 52.17, sample std of (50, 54, 52.5) = 2.02
    assert '52.2 ±  2.0' in lines[1] and lines[1].rstrip().endswith('3')
    assert lines[2].startswith('hclip') and '60.5 ±  0.7' in lines[2]
    one = report.format_table(report.summarize(RUNS[:2]))
    assert '±' not in one.splitlines()[1]  # one seed: no spread is claimed


def test_read_scalars_and_mean_curve(tmp_path):
    path = tmp_path / 'scalars.json'
    recs = [dict(loss=1.0, lr=0.1, step=10), dict(loss=0.5, step=20),
            {'mIoU': 30.0, 'mIoU_seen': 40.0, 'mIoU_unseen': 10.0, 'step': 20},
            dict(loss=0.25, step=30)]
    path.write_text('\n'.join(json.dumps(r) for r in recs) + '\n')
    series = report.read_scalars(str(path))
    assert series['loss'] == [(10, 1.0), (20, 0.5), (30, 0.25)]
    assert series['mIoU_unseen'] == [(20, 10.0)]
    steps, mean, std = report.mean_curve([[(10, 1.0), (20, 3.0)], [(10, 3.0), (20, 5.0),
                                                                    (30, 1.0)]])
    assert steps.tolist() == [10, 20] and mean.tolist() == [2.0, 4.0]
    assert std == pytest.approx([math.sqrt(2)] * 2)


def test_figures_are_written(tmp_path):
    summary = report.summarize(RUNS)
    report.plot_bars(summary, str(tmp_path / 'bars.png'), title='t')
    curves = {s: {'loss': [[(1, 1.0), (2, 0.5)], [(1, 1.2), (2, 0.4)]],
                  'mIoU_seen': [[(2, 40.0)], [(2, 42.0)]], 'mIoU_unseen': [[(2, 9.0)], []]}
              for s in ('frozen', 'hclip')}
    report.plot_curves(curves, str(tmp_path / 'curves.png'))
    for name in ('bars.png', 'curves.png'):
        img = np.array(Image.open(tmp_path / name))
        assert img.ndim == 3 and img.shape[0] > 200 and img.std() > 0


def test_overlays_are_upscaled_and_coloured(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    gt = np.zeros((8, 8), np.uint8)
    gt[2:6, 2:6] = 2
    pred = np.ones((8, 8), np.uint8)
    palette = [[0, 0, 0], [255, 0, 0], [0, 255, 0]]
    path = tmp_path / 'ov.png'
    report.plot_overlays([image, image], [gt, gt], {'a': [pred, pred], 'b': [gt, gt]},
                         ['background', 'red', 'green'], palette, str(path), unseen=['green'],
                         upscale=8)
    img = np.array(Image.open(path).convert('RGB'))
    assert img.shape[0] > 2 * 8 * 8 and img.shape[1] > 4 * 8 * 8  # 2 rows, 4 upscaled panels
    with pytest.raises(ValueError, match='1 predictions'):
        report.plot_overlays([image, image], [gt, gt], {'a': [pred]}, ['a', 'b', 'c'], palette,
                             str(path))
    with pytest.raises(ValueError, match='palette has 3 colours for 4 classes'):
        report.plot_overlays([image], [gt], {}, ['a', 'b', 'c', 'd'], palette, str(path))
