"""projects/hclip_demo: the web demo's functions on the tiny model, and the served page
answering real HTTP requests (Gradio's client and plain HTTP) with a segmentation.

The tiny model is the inline CLIP of configs/_base_/models/hclip_tiny.py (random weights,
adapter moved off its identity init); its predictions are compared with the package's own
API called independently (a pre-resized image for 'whole', the config's reference protocol
for 'reference'), not with the demo's code path.
"""
import json
import os
import os.path as osp
import socket
import urllib.request

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import ROOT, run_tool
from tests.tools.test_demo import synthetic_image
from tests.tools.test_merge_weights import TINY, make_tiny_checkpoint

os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')

VOCAB_TEXT = 'background, "red square, red box", blue circle, sky'
VOCAB = ('background', 'red square, red box', 'blue circle', 'sky')


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    from mmseg_hclip.apis import merge_checkpoint
    root = tmp_path_factory.mktemp('hclip_demo')
    ckpt = make_tiny_checkpoint(str(root / 'train.pth'))
    merged = str(root / 'merged.pth')
    merge_checkpoint(TINY, ckpt, merged)
    return dict(root=root, ckpt=ckpt, merged=merged,
                image=synthetic_image(str(root / 'image.png')))


@pytest.fixture(scope='module')
def segmenter(files):
    from projects.hclip_demo.hclip_demo import Segmenter
    return Segmenter.from_files(TINY, files['ckpt'], device='cpu')


# ------------------------------------------------------------------ vocabulary box
def test_vocabulary_box_syntax():
    from mmseg_hclip.apis import parse_vocabulary
    from projects.hclip_demo.hclip_demo import format_vocabulary, parse_vocabulary_box
    # plain commas: the package's parser, unchanged
    assert parse_vocabulary_box(' cat , sofa,wall ') == parse_vocabulary(' cat , sofa,wall ')
    # synonyms in double quotes, joined by ", " (the package's synonym separator)
    assert parse_vocabulary_box(VOCAB_TEXT) == VOCAB
    assert parse_vocabulary_box('"sofa,couch" , cat') == ('sofa, couch', 'cat')
    # new lines separate classes too
    assert parse_vocabulary_box('cat\n"sofa, couch"\r\nwall') == ('cat', 'sofa, couch', 'wall')
    # an escaped quote inside a quoted name
    assert parse_vocabulary_box('"12"" screen", cat') == ('12" screen', 'cat')
    assert format_vocabulary(('12" screen', 'sofa, couch', 'cat')) == \
        '"12"" screen", "sofa, couch", cat'
    for bad, match in [('', 'empty'), (' , \n', 'empty'), (None, 'empty'),
                       ('cat, "sofa, couch', 'unclosed double quote'),
                       ('cat, "", wall', r'#1 is empty.*double quotes'),
                       ('cat, dog, "cat"', "Duplicate.*'cat' at \\[0, 2\\]"),
                       ('"sofa, couch", "sofa,couch"', 'Duplicate')]:
        with pytest.raises(ValueError, match=match):
            parse_vocabulary_box(bad)


def test_presets_round_trip_the_package_class_lists():
    from mmseg_hclip.datasets.classnames import load_classnames
    from projects.hclip_demo.hclip_demo import PRESETS, parse_vocabulary_box, preset_vocabulary
    assert {'coco', 'ade150', 'pc59', 'voc20'} <= set(PRESETS.values())
    for label, key in PRESETS.items():
        names = parse_vocabulary_box(preset_vocabulary(label))
        expected = tuple(', '.join(s.strip() for s in n.split(',')) for n in
                         load_classnames(key))
        assert names == expected, label
    assert len(parse_vocabulary_box(preset_vocabulary('COCO-Stuff-171'))) == 171
    with pytest.raises(ValueError, match='Unknown preset'):
        preset_vocabulary('COCO')


# -------------------------------------------------------------------------- images
def test_read_image_errors(files, tmp_path):
    from projects.hclip_demo.hclip_demo import read_image
    image = read_image(files['image'])
    assert image.shape == (120, 150, 3) and np.array_equal(image, cv2.imread(files['image']))
    with pytest.raises(ValueError, match='No image'):
        read_image(None)
    corrupt = tmp_path / 'holiday.jpg'
    corrupt.write_bytes(b'not a JPEG at all')
    with pytest.raises(ValueError, match="Cannot read the uploaded file 'holiday.jpg' as an "
                       'image.*corrupt'):
        read_image(str(corrupt))
    empty = tmp_path / 'empty.png'
    empty.write_bytes(b'')
    with pytest.raises(ValueError, match="'empty.png'"):
        read_image(str(empty))
    # huge: refused from the header, with the size and the limit in the message
    with pytest.raises(ValueError, match=r'150x120 = 0\.0 megapixels.*up to 0\.0 megapixels '
                       r'\(--max-pixels\)'):
        read_image(files['image'], max_pixels=150 * 120 - 1)
    assert read_image(files['image'], max_pixels=150 * 120).shape == (120, 150, 3)


def test_huge_image_refused_before_decoding(tmp_path):
    """A 20000 x 20000 PNG (400 MP, ~1 MB on disk) is refused from its header; decoding it
    would take 1.2 GB."""
    from PIL import Image

    from projects.hclip_demo.hclip_demo import read_image
    path = str(tmp_path / 'huge.png')
    Image.new('L', (20000, 20000)).save(path, optimize=False)
    with pytest.raises(ValueError, match='too large|20000x20000'):
        read_image(path)


# ----------------------------------------------------------------------- inference
def test_whole_and_reference_modes_match_the_package_api(files, segmenter):
    import mmcv
    from mmengine.config import Config

    from mmseg_hclip.apis import inference_model, init_model
    image = cv2.imread(files['image'])
    # 'whole' = one view, the image resized to the backbone input (96x96): the same as a
    # config that runs mode='whole' with a Resize in its test pipeline ...
    whole = segmenter.segment(image, VOCAB, 'whole')
    cfg = Config.fromfile(TINY)
    cfg.model.test_cfg = dict(mode='whole')
    cfg.test_pipeline = [dict(type='LoadImageFromNDArray'),
                         dict(type='Resize', scale=(96, 96), keep_ratio=False),
                         dict(type='PackSegInputs')]
    model = init_model(cfg, files['ckpt'])
    expected = inference_model(model, image, VOCAB).seg_logits.data.numpy()
    assert whole.scores.shape == (4, 120, 150) and whole.labels.shape == (120, 150)
    assert np.abs(whole.scores - expected).max() < 1e-5
    assert np.array_equal(whole.labels, whole.scores.argmax(0))
    # ... and, for an image of the backbone's size, the model on the image as it is
    small = mmcv.imresize(image, (96, 96))
    model.cfg.test_pipeline = [dict(type='LoadImageFromNDArray'), dict(type='PackSegInputs')]
    expected = inference_model(model, small, VOCAB).seg_logits.data.numpy()
    assert np.abs(segmenter.segment(small, VOCAB, 'whole').scores - expected).max() < 1e-5
    # 'reference': the config's protocol (160x160, 96 crops, stride 64, global view)
    ref = segmenter.segment(image, VOCAB, 'reference')
    model_ref = init_model(TINY, files['ckpt'])
    assert model_ref.test_cfg['mode'] == 'reference'
    expected_ref = inference_model(model_ref, image, VOCAB).seg_logits.data.numpy()
    assert np.abs(ref.scores - expected_ref).max() < 1e-5
    assert 'crops' in ref.view and '96x96' in whole.view
    assert np.abs(ref.scores - whole.scores).max() > 1e-3  # the modes really differ
    with pytest.raises(ValueError, match="Unknown inference mode 'slide'"):
        segmenter.segment(image, VOCAB, 'slide')
    # the model's own settings are restored after each call
    assert segmenter.model.test_cfg['mode'] == 'reference'


def test_reference_settings_for_a_config_without_them(files):
    """A config in 'whole' mode gets the authors' ratios (640/384/256) at its input size,
    which for the tiny 96-pixel model are exactly the tiny config's own values."""
    from projects.hclip_demo.hclip_demo import Segmenter
    seg = Segmenter.from_files(TINY, files['ckpt'],
                               cfg_options={'model.test_cfg': dict(mode='whole')})
    assert seg.default_mode == 'whole'
    assert seg.test_cfg('reference') == dict(mode='reference', resize_to=(160, 160),
                                             crop_size=(96, 96), stride=(64, 64))


def test_text_embeddings_cached_per_vocabulary(files, segmenter):
    image = cv2.imread(files['image'])
    other = ('sky', 'grass')
    first = segmenter.segment(image, other, 'whole')
    again = segmenter.segment(image, other, 'whole')
    assert not first.text_cached and again.text_cached
    assert np.array_equal(first.scores, again.scores)
    third = segmenter.segment(image, ('sky', 'grass', 'tree'), 'whole')
    assert not third.text_cached and third.scores.shape[0] == 3


def test_merged_checkpoint_gives_the_same_prediction(files, segmenter):
    from projects.hclip_demo.hclip_demo import Segmenter
    merged = Segmenter.from_files(TINY, files['merged'])
    assert merged.merged_checkpoint and not segmenter.merged_checkpoint
    image = cv2.imread(files['image'])
    a = segmenter.segment(image, VOCAB, 'whole').scores
    b = merged.segment(image, VOCAB, 'whole').scores
    assert np.abs(a - b).max() <= 1e-4


def test_handlers_overlay_legend_and_score_map(files, segmenter):
    from mmseg_hclip.apis import generate_palette, show_result
    from projects.hclip_demo.hclip_demo.core import score_map_image
    from projects.hclip_demo.hclip_demo.ui import DemoHandlers
    handlers = DemoHandlers(segmenter)
    overlay, score, choices, chosen, info, caption, state = handlers.segment(
        files['image'], VOCAB_TEXT, 'whole')
    seg = segmenter.segment(cv2.imread(files['image']), VOCAB, 'whole')
    expected, present = show_result(seg.image, seg.result, VOCAB,
                                    palette=generate_palette(4), opacity=0.5)
    assert np.array_equal(overlay, expected)
    assert choices == [('background', 0), ('red square', 1), ('blue circle', 2), ('sky', 3)]
    assert chosen == present[0][0]
    # the table lists the classes present with their share of the pixels
    for label, fraction in present:
        assert f'| {choices[label][0]} | {100 * fraction:.1f} % |' in info
    assert ' s** on cpu for 4 classes, 150x120 image, whole mode (96x96, one view)' in info
    # score map of the chosen class: the (uint8-stored) scores in viridis over the image
    assert score.shape == (120, 150, 3)
    stored = np.round(seg.scores[chosen] * 255) / 255
    assert np.abs(score.astype(int) - score_map_image(stored, seg.image).astype(int)).max() <= 1
    assert f'max {seg.scores[chosen].max():.2f}' in caption
    picture, caption2 = handlers.score_view(state, 2)
    assert 'blue circle' in caption2 and picture.shape == (120, 150, 3)
    with pytest.raises(ValueError, match='not in the vocabulary'):
        handlers.score_view(state, 7)
    # the overlay shown on upload is the image itself (RGB)
    assert np.array_equal(handlers.preview(files['image']), seg.image[..., ::-1])


def test_scores_stored_downscaled_under_the_limit():
    from projects.hclip_demo.hclip_demo.ui import DemoHandlers
    scores = np.random.RandomState(0).rand(5, 400, 300).astype(np.float32)
    full = DemoHandlers.store_scores(scores, limit=10**7)
    assert full.dtype == np.uint8 and full.shape == (5, 400, 300)
    assert np.abs(full / 255 - scores).max() <= 0.5 / 255 + 1e-6
    small = DemoHandlers.store_scores(scores, limit=5 * 100 * 100)
    assert small.shape[0] == 5 and small.size <= 5 * 100 * 100
    assert abs(small.shape[1] / small.shape[2] - 4 / 3) < 0.05


# ---------------------------------------------------------------------- served page
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def served(files):
    pytest.importorskip('gradio')
    from projects.hclip_demo import app
    args = app.parse_args([TINY, files['ckpt'], '--port', str(_free_port())])
    segmenter, demo = app.build(args)
    demo.queue(default_concurrency_limit=1).launch(
        server_name='127.0.0.1', server_port=args.port, prevent_thread_lock=True, quiet=True)
    try:
        yield dict(url=f'http://127.0.0.1:{args.port}/', segmenter=segmenter)
    finally:
        demo.close()


def test_page_is_served_over_http(served):
    with urllib.request.urlopen(served['url'], timeout=30) as resp:
        assert resp.status == 200
        html = resp.read().decode('utf-8', 'replace')
    assert 'H-CLIP open-vocabulary segmentation' in html
    with urllib.request.urlopen(served['url'] + 'config', timeout=30) as resp:
        config = json.loads(resp.read())
    ids = {c.get('props', {}).get('elem_id') for c in config['components']}
    assert {'image-upload', 'vocabulary', 'preset', 'mode', 'segment', 'overlay',
            'score-class', 'score', 'info'} <= ids
    names = {d.get('api_name') for d in config['dependencies']}
    assert {'segment', 'preset', 'score_map'} <= names


def test_segmentation_through_the_http_api(served, files):
    from gradio_client import Client, handle_file
    client = Client(served['url'], verbose=False)
    overlay, score, score_class, info, caption = client.predict(
        handle_file(files['image']), VOCAB_TEXT, 'whole', api_name='/segment')
    drawn = cv2.cvtColor(cv2.imread(overlay), cv2.COLOR_BGR2RGB)
    seg = served['segmenter'].segment(cv2.imread(files['image']), VOCAB, 'whole')
    expected, present = seg.overlay(0.5)
    assert np.array_equal(drawn, expected)  # PNG: lossless
    assert cv2.imread(score).shape == (120, 150, 3)
    # the class selector is updated: the vocabulary as choices, the largest class chosen
    assert score_class['value'] == present[0][0]
    assert [tuple(c) for c in score_class['choices']] == [
        ('background', 0), ('red square', 1), ('blue circle', 2), ('sky', 3)]
    assert 'for 4 classes, 150x120 image, whole mode' in info and 'Score map of' in caption
    # a preset fills the vocabulary box
    text = client.predict('PASCAL VOC-20', api_name='/preset')
    assert text.startswith('aeroplane, bicycle, bird') and text.count(',') == 19


def test_errors_reach_the_page_as_messages(served, files, tmp_path):
    from gradio_client import Client, handle_file
    client = Client(served['url'], verbose=False)
    corrupt = tmp_path / 'broken.png'
    corrupt.write_bytes(b'\x89PNG but broken')
    cases = [((handle_file(files['image']), ' , ', 'whole'), 'vocabulary is empty'),
             ((handle_file(str(corrupt)), 'cat', 'whole'),
              "Cannot read the uploaded file 'broken.png' as an image"),
             ((None, 'cat', 'whole'), 'No image: upload an image')]
    for inputs, message in cases:
        with pytest.raises(Exception) as exc:
            client.predict(*inputs, api_name='/segment')
        assert message in str(exc.value)
        assert 'Traceback' not in str(exc.value)


def test_app_refuses_bad_arguments_clearly(files, tmp_path):
    proc = run_tool([osp.join('projects', 'hclip_demo', 'app.py'), TINY,
                     str(tmp_path / 'missing.pth')], timeout=300)
    assert proc.returncode != 0
    assert "error: checkpoint '" in proc.stderr and 'missing.pth' in proc.stderr
    assert 'Traceback' not in proc.stderr
    if not torch.cuda.is_available():
        proc = run_tool([osp.join('projects', 'hclip_demo', 'app.py'), TINY, files['ckpt'],
                         '--device', 'cuda'], timeout=300)
        assert proc.returncode != 0 and 'no CUDA GPU is available' in proc.stderr


def test_project_layout(repo_root):
    base = osp.join(repo_root, 'projects', 'hclip_demo')
    with open(osp.join(base, 'requirements.txt')) as f:
        reqs = f.read()
    assert 'gradio' in reqs
    with open(osp.join(ROOT, 'requirements.txt')) as f:
        assert 'gradio' in f.read()  # CI installs it (tools/install.sh applies this file)
    readme = open(osp.join(base, 'README.md')).read()
    shot = 'resources/screenshot.png'
    assert shot in readme and osp.getsize(osp.join(base, shot)) < 400_000
