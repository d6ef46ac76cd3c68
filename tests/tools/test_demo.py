"""tools/demo.py: a prediction overlay (MMSeg's visualiser + legend) at the image's size,
the same prediction from a merged and an unmerged checkpoint, clear errors for bad input.

Uses the tiny inline CLIP of configs/_base_/models/hclip_tiny.py."""
import json
import os.path as osp

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import run_tool
from tests.tools.test_merge_weights import (TINY, load_tool, make_tiny_checkpoint,
                                            other_arch_options)

VOCAB = 'background,red square,blue circle,sky'


def synthetic_image(path: str, height: int = 120, width: int = 150) -> str:
    """A noisy image with a red square and a blue disc (BGR), not a multiple of 96."""
    rng = np.random.RandomState(0)
    img = (rng.rand(height, width, 3) * 60 + 100).astype(np.uint8)
    cv2.rectangle(img, (15, 20), (70, 80), (0, 0, 230), -1)
    cv2.circle(img, (115, 75), 25, (230, 40, 0), -1)
    cv2.imwrite(path, img)
    return path


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    from mmseg_hclip.apis import merge_checkpoint
    root = tmp_path_factory.mktemp('demo')
    ckpt = make_tiny_checkpoint(str(root / 'train.pth'))
    merged = str(root / 'merged.pth')
    merge_checkpoint(TINY, ckpt, merged)
    return dict(root=root, ckpt=ckpt, merged=merged,
                image=synthetic_image(str(root / 'image.png')))


def _demo(files, out, *extra, checkpoint=None):
    argv = [files['image'], '--vocabulary', VOCAB, '--config', TINY, '--checkpoint',
            checkpoint or files['ckpt'], '--out', str(out), *extra]
    return load_tool('demo').main(argv)


def test_demo_command_line_writes_a_png_of_the_image_size(files, tmp_path):
    out = tmp_path / 'sub' / 'out.png'
    proc = run_tool(['tools/demo.py', files['image'], '--vocabulary', VOCAB, '--config', TINY,
                     '--checkpoint', files['ckpt'], '--out', str(out)], timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    drawn = cv2.imread(str(out))
    assert drawn is not None and drawn.shape == (120, 150, 3)
    assert f'saved {out}' in proc.stdout
    listed = [line.split('%')[0] for line in proc.stdout.splitlines() if line.endswith('%')]
    assert listed and all(any(n in line for n in VOCAB.split(',')) for line in listed)


def test_merged_and_unmerged_checkpoints_agree(files, tmp_path):
    res = _demo(files, tmp_path / 'unmerged.png')
    res_m = _demo(files, tmp_path / 'merged.png', checkpoint=files['merged'])
    a, b = res['result'], res_m['result']
    scores, scores_m = a.seg_logits.data, b.seg_logits.data
    assert scores.shape == (4, 120, 150)
    diff = float((scores - scores_m).abs().max())
    assert diff <= 1e-4
    labels, labels_m = a.pred_sem_seg.data[0], b.pred_sem_seg.data[0]
    # the argmax can only differ where the top-2 margin is within 2 * diff (the random tiny
    # head separates classes by ~1e-4 only, so exact ties are possible in principle)
    top2 = scores.topk(2, dim=0).values
    clear = (top2[0] - top2[1]) > 2 * diff
    assert clear.float().mean() > 0.95
    assert torch.equal(labels[clear], labels_m[clear])
    assert [f for _, f in res['present']] == pytest.approx([f for _, f in res_m['present']],
                                                           abs=1e-3)
    for name in ('unmerged.png', 'merged.png'):
        assert cv2.imread(str(tmp_path / name)).shape == (120, 150, 3)


def test_overlay_has_labels_and_legend(files, tmp_path):
    from mmseg_hclip.apis import generate_palette, show_result
    res = _demo(files, tmp_path / 'out.png', '--opacity', '0.6')
    image = cv2.imread(files['image'])
    vocab = res['vocabulary']
    palette = generate_palette(len(vocab))
    result = res['result']
    plain, present = show_result(image, result, vocab, opacity=0.6, with_labels=False,
                                 legend=False)
    labelled, _ = show_result(image, result, vocab, opacity=0.6, with_labels=True,
                              legend=False)
    full, _ = show_result(image, result, vocab, opacity=0.6)
    assert np.array_equal(full, cv2.cvtColor(cv2.imread(str(tmp_path / 'out.png')),
                                             cv2.COLOR_BGR2RGB))
    # the overlay itself: image * (1 - a) + palette colour * a at every pixel
    labels = result.pred_sem_seg.data[0].numpy()
    rgb = image[..., ::-1].astype(np.float64)
    colour = np.array(palette)[labels]
    assert np.abs(plain - (rgb * 0.4 + colour * 0.6)).max() <= 1.0
    # MMSeg's visualiser wrote class names on the regions
    assert (labelled != plain).any(axis=-1).sum() > 50
    # the legend: a box in the top-left corner, one swatch per class present, largest first
    changed = (full != labelled).any(axis=-1)
    ys, xs = np.nonzero(changed)
    assert ys.min() < 5 and xs.min() < 5 and ys.max() < 100 and xs.max() < 150
    assert not changed[110:, :].any()
    column = full[:ys.max() + 1, 5].astype(int)  # through the swatches
    first_rows = []
    for label, _ in present:
        hits = np.nonzero(np.abs(column - palette[label]).max(axis=1) == 0)[0]
        assert len(hits) >= 4, (label, present)  # a swatch, not a stray pixel
        first_rows.append(hits[0])
    assert first_rows == sorted(first_rows)
    assert [vocab[i] for i, _ in present] and sum(f for _, f in present) == pytest.approx(1)


def test_vocabulary_sources(tmp_path):
    from mmseg_hclip.apis import parse_vocabulary
    assert parse_vocabulary(' cat , sofa,wall ') == ('cat', 'sofa', 'wall')
    js = tmp_path / 'v.json'
    js.write_text(json.dumps(['building, edifice', 'sky']))
    assert parse_vocabulary(file=str(js)) == ('building, edifice', 'sky')
    txt = tmp_path / 'v.txt'
    txt.write_text('# my classes\ncat\n\nsofa, couch\n')
    assert parse_vocabulary(file=str(txt)) == ('cat', 'sofa, couch')
    with pytest.raises(ValueError, match='empty'):
        parse_vocabulary('')
    with pytest.raises(ValueError, match='empty'):
        parse_vocabulary(' , ')
    with pytest.raises(ValueError, match='#1 is empty'):
        parse_vocabulary('cat,,sofa')
    with pytest.raises(ValueError, match="Duplicate.*'cat' at \\[0, 2\\]"):
        parse_vocabulary('cat,sofa,cat')
    with pytest.raises(ValueError, match='not both'):
        parse_vocabulary('cat', str(txt))
    empty = tmp_path / 'empty.txt'
    empty.write_text('\n# nothing\n')
    with pytest.raises(ValueError, match='holds no class names'):
        parse_vocabulary(file=str(empty))
    with pytest.raises(FileNotFoundError, match='nope.json'):
        parse_vocabulary(file=str(tmp_path / 'nope.json'))


def test_palette_distinct_and_deterministic():
    from mmseg_hclip.apis import generate_palette
    palette = generate_palette(847)
    assert palette == generate_palette(847) and len({tuple(c) for c in palette}) == 847
    assert all(0 <= v <= 255 for c in palette for v in c)
    steps = np.abs(np.diff(np.array(palette), axis=0)).sum(axis=1)
    assert steps.min() > 100  # neighbouring labels get clearly different colours


def test_bad_inputs_fail_clearly(files, tmp_path):
    out = tmp_path / 'out.png'
    # unreadable images, named in the message
    missing = str(tmp_path / 'missing.jpg')
    with pytest.raises(SystemExit, match=f"image '{missing}' does not exist"):
        _demo(dict(files, image=missing), out)
    corrupt = tmp_path / 'corrupt.png'
    corrupt.write_bytes(b'this is not a PNG')
    with pytest.raises(SystemExit, match=f"cannot decode image '{corrupt}'"):
        _demo(dict(files, image=str(corrupt)), out)
    # empty / duplicate vocabulary
    tool = load_tool('demo')
    base = [files['image'], '--config', TINY, '--checkpoint', files['ckpt'], '--out', str(out)]
    with pytest.raises(SystemExit, match='vocabulary .* is empty'):
        tool.main(base + ['--vocabulary', ''])
    with pytest.raises(SystemExit, match='Duplicate class names'):
        tool.main(base + ['--vocabulary', 'cat,cat'])
    # missing checkpoint
    with pytest.raises(SystemExit, match="checkpoint '.*nothere.pth' does not exist"):
        _demo(files, out, checkpoint=str(tmp_path / 'nothere.pth'))
    # opacity out of range
    with pytest.raises(SystemExit, match='opacity'):
        _demo(files, out, '--opacity', '0')
    # cuda without a GPU
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match='no CUDA GPU is available.*--device cpu'):
            _demo(files, out, '--device', 'cuda')
    with pytest.raises(SystemExit, match='Unknown device'):
        _demo(files, out, '--device', 'gpu0')
    assert not out.exists()


def test_checkpoint_of_another_architecture(files, tmp_path):
    other = make_tiny_checkpoint(str(tmp_path / 'other.pth'), other_arch_options())
    with pytest.raises(SystemExit) as exc:
        _demo(files, tmp_path / 'out.png', checkpoint=other)
    msg = str(exc.value)
    assert "checkpoint '" in msg and 'other.pth' in msg and 'does not fit' in msg
    for part in ('missing key', 'unexpected key', 'shape mismatch',
                 'backbone.clip.visual.transformer.resblocks.3.'):
        assert part in msg
    assert not osp.exists(tmp_path / 'out.png')
