"""The tiny CLIP pretraining of the quickstart: captions, a few contrastive steps, and the
file it writes loading as an ordinary open_clip checkpoint (into unmodified open_clip and
through HCLIPBackbone's ``pretrained=`` path)."""
import json
import os
import re

import numpy as np
import pytest
import torch

from mmseg_hclip.quickstart.captions import (ALL_NAMES, MIN_VISIBLE, caption_scene, mentioned,
                                             render_captioned_batch, single_shape_batch)
from mmseg_hclip.quickstart.shapes import SEEN_CLASSES, UNSEEN_CLASSES, render_scene
from mmseg_hclip.quickstart.tiny_clip import (TINY_CLIP_ARCH, build_tiny_clip,
                                              evaluate_tiny_clip, fp16_state_dict,
                                              pretrain_tiny_clip)
from tests.conftest import ROOT, run_tool

SHIPPED = os.path.join(ROOT, 'mmseg_hclip', 'quickstart', 'tiny_clip_shapes.pt')
RELATIONS = ('above', 'below', 'to the left of', 'to the right of')


def test_render_scene_objects_do_not_change_the_scene():
    a = render_scene(np.random.default_rng(5), ALL_NAMES, 64)
    b = render_scene(np.random.default_rng(5), ALL_NAMES, 64, return_objects=True)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    for obj in b[2]:  # each listed shape is drawn where it says, in its class's pixels
        cy, cx = int(obj['cy']), int(obj['cx'])
        if obj['visible'] == 1.0:
            from mmseg_hclip.quickstart.shapes import EVAL_CLASSES
            assert b[1][cy, cx] == EVAL_CLASSES.index(obj['name'])


def test_captions_name_every_word_and_the_right_relations():
    rng = np.random.default_rng(0)
    images, captions, objects = render_captioned_batch(rng, 300, size=48)
    assert images.shape == (300, 48, 48, 3) and images.dtype == np.uint8
    text = ' '.join(captions)
    # every name occurs, the four names that segmentation training never labels included
    for name in ALL_NAMES:
        assert name in text, name
    assert set(UNSEEN_CLASSES) <= set(ALL_NAMES) and set(SEEN_CLASSES) <= set(ALL_NAMES)
    checked = 0
    for caption, objs in zip(captions, objects):
        named = mentioned(objs)
        assert all(o['visible'] >= MIN_VISIBLE for o in named) or len(named) == 1
        for o in named:  # every mentioned shape is in the caption (singular or plural)
            assert o['name'] in caption
        for rel in RELATIONS:
            m = re.search(r'a (\w+ \w+) ' + rel + r' a (\w+ \w+)', caption)
            if m:
                a = next(o for o in named if o['name'] == m.group(1))
                b = next(o for o in named if o['name'] == m.group(2))
                dy, dx = a['cy'] - b['cy'], a['cx'] - b['cx']
                expected = {'above': dy < 0 and abs(dy) >= abs(dx),
                            'below': dy > 0 and abs(dy) >= abs(dx),
                            'to the left of': dx < 0 and abs(dx) > abs(dy),
                            'to the right of': dx > 0 and abs(dx) > abs(dy)}[rel]
                assert expected, (caption, a, b)
                checked += 1
    assert checked > 20
    # occluded shapes are not named
    hidden = [dict(name='red circle', cy=1, cx=1, r=1, visible=0.1),
              dict(name='blue square', cy=1, cx=1, r=1, visible=0.9)]
    assert 'red circle' not in caption_scene(hidden, np.random.default_rng(0))


def test_single_shape_batch():
    images, targets = single_shape_batch(np.random.default_rng(1), 2, size=32)
    assert images.shape == (24, 32, 32, 3) and targets == sorted(list(range(12)) * 2)


def test_bad_arguments():
    with pytest.raises(ValueError, match='n=0'):
        render_captioned_batch(np.random.default_rng(0), 0)
    with pytest.raises(ValueError, match='batch_size=1'):
        pretrain_tiny_clip(steps=1, batch_size=1, pool_size=4, log=None)
    with pytest.raises(ValueError, match='pool_size=4'):
        pretrain_tiny_clip(steps=1, batch_size=8, pool_size=4, log=None)


def test_pretraining_is_deterministic_and_changes_the_weights():
    kw = dict(steps=3, batch_size=8, pool_size=16, warmup=1, threads=1, log=None)
    a = pretrain_tiny_clip(**kw).state_dict()
    b = pretrain_tiny_clip(**kw).state_dict()
    init = build_tiny_clip(seed=0).state_dict()
    assert a.keys() == b.keys() == init.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    moved = [k for k in a if a[k].is_floating_point() and not torch.equal(a[k], init[k])]
    assert 'visual.transformer.resblocks.0.attn.in_proj_weight' in moved
    assert 'transformer.resblocks.0.attn.in_proj_weight' in moved


def test_script_writes_an_open_clip_checkpoint_the_backbone_loads(tmp_path):
    import open_clip
    out = tmp_path / 'tiny.pt'
    res = run_tool(['tools/quickstart/pretrain_tiny_clip.py', '--out', str(out), '--steps', '2',
                    '--batch-size', '8', '--pool-size', '16', '--warmup', '1', '--threads',
                    '1', '--log-every', '1', '--eval-pairs', '16', '--eval-per-name', '2'],
                   timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert 'zero-shot retrieval' in res.stdout and 'step 2/2' in res.stdout
    record = json.loads((tmp_path / 'tiny.pt.json').read_text())
    assert record['bytes'] == os.path.getsize(out) and len(record['sha256']) == 64
    sd = torch.load(out, weights_only=True)
    assert all(v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
    # unmodified open_clip reads it ...
    ref = open_clip.CLIP(**TINY_CLIP_ARCH)
    open_clip.load_checkpoint(ref, str(out), strict=True)
    ref.eval()
    # ... and so does the backbone, through the same `pretrained=` as real CLIP weights
    from mmseg_hclip.models.backbones import HCLIPBackbone
    bb = HCLIPBackbone(arch=TINY_CLIP_ARCH, pretrained=str(out), img_size=96,
                       guidance_layers=(0, 1)).eval()
    for k, v in sd.items():
        assert torch.equal(bb.clip.state_dict()[k], v.float()), k
    prompts = ['a photo of a blue circle in the scene', 'a red square']
    tokens = open_clip.SimpleTokenizer(context_length=24)(prompts)
    with torch.no_grad():
        torch.testing.assert_close(bb.encode_text(bb.tokenize(prompts)), ref.encode_text(tokens),
                                   rtol=1e-5, atol=1e-6)
    # the printed evaluation is that of the written (fp16) weights
    ev = evaluate_tiny_clip(ref, num_pairs=16, per_name=2)
    assert f'{ev["cls_all"]:.1f} %' in res.stdout


def test_evaluation_of_a_constant_model():
    """Constant features: every similarity ties and argmax picks index 0, so the scores are
    known in advance: 1 of the 12 names is right, and image->text is right exactly for the
    images whose shapes equal those of the first held-out caption."""
    class Constant(torch.nn.Module):
        context_length = 24

        def encode_image(self, x, normalize=True):
            return torch.ones(len(x), 4) / 2

        def encode_text(self, tokens, normalize=True):
            return torch.ones(len(tokens), 4) / 2

    ev = evaluate_tiny_clip(Constant(), seed=7, num_pairs=16, per_name=2)
    assert ev['cls_all'] == pytest.approx(100 / 12)
    first_unseen = ALL_NAMES[0] in UNSEEN_CLASSES  # the tied argmax names it every time
    assert ev['cls_unseen'] == pytest.approx(100 / 4 if first_unseen else 0)
    assert ev['cls_seen'] == pytest.approx(0 if first_unseen else 100 / 8)
    _, _, objects = render_captioned_batch(np.random.default_rng(7), 16)
    keys = [sorted(o['name'] for o in mentioned(objs)) for objs in objects]
    assert ev['i2t_top1'] == pytest.approx(100 * np.mean([k == keys[0] for k in keys]))
    assert ev['t2i_top1'] == pytest.approx(ev['i2t_top1'])
    assert ev['chance_i2t'] == pytest.approx(100 * np.mean([[a == b for b in keys]
                                                             for a in keys]))


def test_shipped_tiny_clip():
    """The committed file: small, fp16, loads strictly into TINY_CLIP_ARCH."""
    import open_clip
    assert os.path.getsize(SHIPPED) < 5 * 2**20
    model = open_clip.CLIP(**TINY_CLIP_ARCH)
    open_clip.load_checkpoint(model, SHIPPED, strict=True)
    sd = torch.load(SHIPPED, weights_only=True)
    assert sd.keys() == fp16_state_dict(model).keys()
