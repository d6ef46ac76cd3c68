"""tools/deploy: the ONNX export of the merged tiny model equals PyTorch under onnxruntime
(image side, head at several class counts on both sides of pad_len - padding and top-k
paths -, text side), the torch-free tokenizer equals open_clip's, and onnx_demo.py segments
without importing torch, with the scores of the PyTorch model.

The tiny model (configs/_base_/models/hclip_tiny.py) pads to pad_len=16 classes, so its
top-k path runs from 17 classes on (the ViT configs: 256); 300 classes are tested too.
"""
import json
import os.path as osp
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import ROOT, load_script, run_tool
from tests.tools.test_demo import synthetic_image
from tests.tools.test_merge_weights import TINY, make_tiny_checkpoint

pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

DEPLOY = osp.join(ROOT, 'tools', 'deploy')
TOL = 1e-4
VOCAB = ('background', 'red square, red box', 'blue circle', 'sky')


def deploy_module(name):
    if DEPLOY not in sys.path:
        sys.path.insert(0, DEPLOY)
    return load_script(f'tools/deploy/{name}.py', f'hclip_deploy_{name}')


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """Export the merged tiny model once, through the command line's main()."""
    root = tmp_path_factory.mktemp('onnx')
    ckpt = make_tiny_checkpoint(str(root / 'train.pth'))
    out = str(root / 'onnx')
    tool = deploy_module('export_onnx')
    tool.main([TINY, ckpt, '--out', out, '--no-check'])
    model = tool.load_merged_model(TINY, ckpt)
    return dict(root=root, ckpt=ckpt, out=out, model=model, tool=tool,
                image=synthetic_image(str(root / 'image.png')))


_SESSIONS = {}


def _sessions(out):
    """onnxruntime sessions of every graph of an export (loaded once per folder)."""
    import onnxruntime as ort
    if out not in _SESSIONS:
        names = json.load(open(osp.join(out, 'deploy.json')))['files']
        _SESSIONS[out] = {
            k: ort.InferenceSession(osp.join(out, v), providers=['CPUExecutionProvider'])
            for k, v in names.items() if v.endswith('.onnx')}
    return _SESSIONS[out]


def test_export_writes_every_file(exported):
    meta = json.load(open(osp.join(exported['out'], 'deploy.json')))
    for name in meta['files'].values():
        assert osp.getsize(osp.join(exported['out'], name)) > 0
    assert meta['pad_len'] == 16 and meta['image_size'] == [96, 96]
    assert meta['templates'] == ['A photo of a {} in the scene'] and meta['synonyms'] == 'first'
    assert meta['test_cfg'] == dict(mode='reference', resize_to=[160, 160], crop_size=[96, 96],
                                    stride=[64, 64])


def test_merged_model_is_the_merged_checkpoint(exported, tmp_path):
    """The in-memory merge of the export equals tools/merge_weights.py's checkpoint."""
    from mmseg_hclip.apis import init_model, merge_checkpoint
    merged = str(tmp_path / 'merged.pth')
    merge_checkpoint(TINY, exported['ckpt'], merged)
    reference = init_model(TINY, merged)
    assert reference.backbone.adapter is None and exported['model'].backbone.adapter is None
    own = exported['model'].state_dict()
    for k, v in reference.state_dict().items():
        assert torch.equal(own[k], v), k


def test_image_side_equals_pytorch(exported):
    sess = _sessions(exported['out'])['image']
    backbone = exported['model'].backbone
    for batch in (1, 3):
        image = torch.randn(batch, 3, 96, 96, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            ref = backbone(image)
        outs = sess.run(None, {'image': image.numpy()})
        assert len(outs) == 3
        for out, r in zip(outs, [ref['dense']] + ref['guidance']):
            assert out.shape == tuple(r.shape)
            assert np.abs(out - r.numpy()).max() <= TOL


@pytest.mark.parametrize('num_classes', [1, 4, 15, 16, 17, 40, 300])
def test_head_equals_pytorch_at_any_class_count(exported, num_classes):
    """<= 16 classes: head.onnx (padding tokens); > 16: head_topk.onnx (top-16 selection,
    the others -100)."""
    from mmseg_hclip.models.decode_heads.cost_aggregation_head import DROPPED_CLASS_LOGIT
    sessions = _sessions(exported['out'])
    model = exported['model']
    g = torch.Generator().manual_seed(num_classes)
    image = torch.randn(2, 3, 96, 96, generator=g)
    text = F.normalize(torch.randn(num_classes, 1, 32, generator=g), dim=-1)
    with torch.no_grad():
        feats = model.backbone(image)
        ref = model.decode_head(dict(feats, text=text)).numpy()
    key = 'head_topk' if num_classes > 16 else 'head'
    feed = {'dense': feats['dense'].numpy(), 'text': text.numpy(),
            'guidance_0': feats['guidance'][0].numpy(),
            'guidance_1': feats['guidance'][1].numpy()}
    out = sessions[key].run(None, feed)[0]
    assert out.shape == ref.shape == (2, num_classes, 24, 24)
    assert np.abs(out - ref).max() <= TOL
    dropped = (ref == DROPPED_CLASS_LOGIT).all(axis=(2, 3))
    if num_classes > 16:
        assert (dropped.sum(axis=1) == num_classes - 16).all()
        assert np.array_equal(dropped, (out == DROPPED_CLASS_LOGIT).all(axis=(2, 3)))
    else:
        assert not dropped.any()


def test_text_side_equals_the_text_neck(exported):
    sess = _sessions(exported['out'])['text']
    model = exported['model']
    tok = deploy_module('clip_tokenizer').ClipTokenizer(
        osp.join(exported['out'], 'bpe_simple_vocab_16e6.txt.gz'))
    for vocab in (('sky', ), VOCAB, tuple(f'class number {i}' for i in range(40))):
        with torch.no_grad():
            ref = model.neck(model.backbone, vocab).numpy()  # [N, 1, C], normalised
        prompts = [f'A photo of a {n.split(",")[0]} in the scene' for n in vocab]
        tokens = tok(prompts)
        cut = exported['tool'].cut_tokens(tokens)  # what onnx_demo feeds: up to the last end
        assert cut.shape[1] < 20 and np.array_equal(cut, tokens[:, :cut.shape[1]])
        for feed in (tokens, cut):
            out = sess.run(None, {'tokens': feed})[0]
            assert out.shape == (len(vocab), 32)
            assert np.abs(out - ref[:, 0]).max() <= TOL


def test_tokenizer_equals_open_clip():
    import open_clip
    from open_clip.tokenizer import default_bpe

    from mmseg_hclip.datasets.classnames import EXPECTED_LENGTHS, load_classnames
    ours = deploy_module('clip_tokenizer').ClipTokenizer(default_bpe())
    ref = open_clip.get_tokenizer('ViT-B-16')
    names = [n for key in EXPECTED_LENGTHS for n in load_classnames(key)]
    texts = names + [f'A photo of a {n} in the scene' for n in names[:200]] + [
        'Ünïcödé café naïve 東京 🙂 &amp; &lt;b&gt;', "it's a dog's life, isn't it?",
        '  many   spaces\tand\nnew lines ', 'x' * 500, ' '.join(['word'] * 100), '',
        '12345 3.14 $%^&*()', 'C++ / C# <start_of_text> end']
    assert np.array_equal(ours(texts), ref(texts).numpy())


def test_palette_equals_the_package_palette():
    from mmseg_hclip.apis import generate_palette
    assert deploy_module('onnx_demo').palette(847) == generate_palette(847)


def test_resize_equals_torch_interpolate():
    demo = deploy_module('onnx_demo')
    x = torch.randn(3, 5, 17, 23)
    for size in [(40, 50), (8, 9), (17, 23), (1, 1), (33, 7)]:
        ref = F.interpolate(x, size=size, mode='bilinear', align_corners=False).numpy()
        assert np.abs(demo.resize_bilinear(x.numpy(), size) - ref).max() < 1e-5


@pytest.mark.parametrize('mode', ['whole', 'reference'])
def test_onnx_demo_scores_equal_pytorch(exported, mode):
    """End to end: vocabulary + image through onnxruntime vs the PyTorch model (the web
    demo's Segmenter: the package's inference_model in the same mode)."""
    from projects.hclip_demo.hclip_demo import Segmenter
    demo = deploy_module('onnx_demo')
    image = cv2.imread(exported['image'])
    ours = demo.OnnxSegmenter(exported['out']).segment(image, VOCAB, mode)
    ref = Segmenter(exported['model']).segment(image, VOCAB, mode)
    assert ours['scores'].shape == ref.scores.shape == (4, 120, 150)
    assert np.abs(ours['scores'] - ref.scores).max() <= TOL
    top2 = np.sort(ref.scores, axis=0)[-2:]
    clear = top2[1] - top2[0] > 2 * TOL
    assert np.array_equal(ours['labels'][clear], ref.labels[clear])


def test_onnx_demo_command_line_does_not_import_torch(exported, tmp_path):
    out = tmp_path / 'overlay.png'
    scores = tmp_path / 'scores.npy'
    # torch (and mmseg/mmcv/open_clip, which need it) cannot be imported in this process
    code = ("import sys, runpy; sys.modules['torch'] = None; "
            f"sys.argv = ['onnx_demo.py'] + {[exported['out'], exported['image'], '--vocabulary', 'background,red square,blue circle,sky', '--out', str(out), '--save-scores', str(scores), '--mode', 'whole']!r}; "  # noqa: E501
            f"runpy.run_path({osp.join(DEPLOY, 'onnx_demo.py')!r}, run_name='__main__'); "
            "assert not any(m.split('.')[0] in ('torch', 'mmseg', 'mmcv', 'open_clip') "
            "for m in sys.modules if sys.modules[m] is not None), 'torch imported'")
    proc = run_tool(['-c', code], timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    drawn = cv2.imread(str(out))
    assert drawn.shape == (120, 150, 3)
    assert 'onnxruntime' in proc.stdout and f'saved {out}' in proc.stdout
    s = np.load(scores)
    assert s.shape == (4, 120, 150) and 0 <= s.min() and s.max() <= 1


def test_export_refuses_bad_inputs(tmp_path):
    tool = deploy_module('export_onnx')
    with pytest.raises(SystemExit, match="checkpoint '.*nothere.pth' does not exist"):
        tool.main([TINY, str(tmp_path / 'nothere.pth'), '--out', str(tmp_path / 'o')])
    demo = deploy_module('onnx_demo')
    image = synthetic_image(str(tmp_path / 'image.png'))
    with pytest.raises(SystemExit, match='deploy.json does not exist'):
        demo.main([str(tmp_path), image, '--vocabulary', 'a', '--out', 'o.png'])
    with pytest.raises(SystemExit, match="cannot read image '.*missing.png'"):
        demo.main([str(tmp_path), str(tmp_path / 'missing.png'), '--vocabulary', 'a',
                   '--out', 'o.png'])
    with pytest.raises(ValueError, match='empty'):
        demo.parse_vocabulary(' , ')
    with pytest.raises(ValueError, match='duplicate'):
        demo.parse_vocabulary('a,b,a')


def test_check_export_reports_small_differences(exported):
    diffs = exported['tool'].check_export(exported['model'], exported['out'],
                                          class_counts=(3, 16, 20))
    assert set(diffs) == {'image_b1', 'image_b2', 'head_3', 'head_16', 'head_20', 'text',
                          'text_full'}
    assert max(diffs.values()) <= TOL
