"""HCLIPSegmentor on the tiny config: training step, merge in eval, inference modes, vocabulary."""
import copy
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

import mmseg_hclip  # noqa: F401  (registers the modules)

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TINY_CFG = osp.join(ROOT, 'configs', '_base_', 'models', 'hclip_tiny.py')
register_all_modules(init_default_scope=True)  # data_preprocessor is built in the mmseg scope


def build_tiny(test_cfg=None, seed=0, **backbone):
    cfg = Config.fromfile(TINY_CFG)
    model_cfg = copy.deepcopy(cfg.model)
    if test_cfg is not None:
        model_cfg.test_cfg = test_cfg
    model_cfg.backbone.update(backbone)
    torch.manual_seed(seed)
    return MODELS.build(model_cfg)


def batch(num=2, size=(96, 96), num_classes=3, seed=0):
    """Raw uint8 images + samples with random labels (some ignored), as a dataloader gives."""
    g = torch.Generator().manual_seed(seed)
    inputs, samples = [], []
    for _ in range(num):
        inputs.append(torch.randint(0, 256, (3, *size), generator=g, dtype=torch.uint8))
        label = torch.randint(0, num_classes, (1, *size), generator=g)
        label[:, :8] = 255
        sample = SegDataSample(gt_sem_seg=PixelData(data=label))
        sample.set_metainfo(dict(ori_shape=size, img_shape=size, pad_shape=size))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def train_one_step(model, lr=0.05):
    model.train()
    optim = OptimWrapper(torch.optim.SGD([p for p in model.parameters() if p.requires_grad],
                                         lr=lr))
    return model.train_step(batch(), optim)


@pytest.fixture(scope='module')
def trained():
    """The tiny model after one training step on 3 classes (adapter no longer identity)."""
    model = build_tiny()
    model.set_vocabulary(['background', 'square', 'sky, heaven'])
    train_one_step(model)
    return model


def test_one_training_step_changes_only_trainable_parameters():
    model = build_tiny()
    model.set_vocabulary(['background', 'square', 'sky, heaven'])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith(('backbone.adapter.', 'decode_head.')) for n in trainable)
    assert not any(p.requires_grad for p in model.backbone.clip.parameters())
    log = train_one_step(model)
    assert torch.isfinite(log['loss'])
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed <= trainable, sorted(changed - trainable)
    assert {'backbone.adapter.blocks.image', 'backbone.adapter.generators.text'} <= changed
    assert any(n.startswith('decode_head.') for n in changed)
    assert not model.backbone.merged


def test_eval_uses_merged_weights_and_equals_unmerged(trained, monkeypatch):
    model = copy.deepcopy(trained).eval()
    inputs = model.data_preprocessor(batch(num=1), False)['inputs']
    with torch.no_grad():
        merged = model._forward(inputs)
        assert model.backbone.merged
        calls = []
        adapter_forward = type(model.backbone.adapter).forward
        monkeypatch.setattr(type(model.backbone.adapter), 'forward',
                            lambda self, *a, **k: calls.append(1) or adapter_forward(self, *a, **k))
        again = model._forward(inputs)
        assert not calls  # eval forwards cost plain CLIP: no adapted weights are built
        model.backbone.merge_in_eval = False
        unmerged = model._forward(inputs)
        assert calls and not model.backbone.merged
    torch.testing.assert_close(again, merged)
    torch.testing.assert_close(unmerged, merged, rtol=1e-4, atol=1e-4)
    # training resumes on the pretrained weights
    model.backbone.merge_in_eval = True
    with torch.no_grad():
        model._forward(inputs)
    model.train()
    assert not model.backbone.merged
    for name, p in model.backbone.clip.named_parameters():
        assert torch.equal(p, trained.backbone.clip.get_parameter(name)), name


def metas(size, n=1):
    return [dict(ori_shape=size, img_shape=size, pad_shape=size, padding_size=[0, 0, 0, 0])
            for _ in range(n)]


def crop_scores(model, crop):
    return model.encode_decode(crop, [dict(img_shape=torch.Size(crop.shape[2:]))])


def test_reference_inference_equals_hand_average(trained):
    model = copy.deepcopy(trained).eval()
    cfg = model.test_cfg
    assert cfg['mode'] == 'reference' and tuple(cfg['resize_to']) == (160, 160)
    image = torch.randn(1, 3, 120, 100)
    with torch.no_grad():
        out = model.inference(image, metas((120, 100)))
        big = F.interpolate(image, size=(160, 160), mode='bilinear', align_corners=False)
        total = torch.zeros(1, 3, 160, 160)
        count = torch.zeros(1, 1, 160, 160)
        for y in (0, 64):
            for x in (0, 64):
                total[..., y:y + 96, x:x + 96] += crop_scores(model, big[..., y:y + 96, x:x + 96])
                count[..., y:y + 96, x:x + 96] += 1
        glob = crop_scores(model, F.interpolate(image, size=(96, 96), mode='bilinear',
                                                align_corners=False))
        glob = F.interpolate(glob, size=(160, 160), mode='bilinear', align_corners=False)
        ref = F.interpolate((total / count + glob) / 2, size=(120, 100), mode='bilinear',
                            align_corners=False)
    assert out.shape == (1, 3, 120, 100)
    assert count.min() == 1 and count.max() == 4
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert out.min() >= 0 and out.max() <= 1  # averaged sigmoid scores


def test_reference_inference_ignores_padding(trained):
    model = copy.deepcopy(trained).eval()
    image = torch.randn(1, 3, 120, 100)
    padded = F.pad(image, (0, 12, 0, 8))
    meta = dict(ori_shape=(120, 100), img_shape=(120, 100), pad_shape=(128, 112),
                padding_size=[0, 12, 0, 8])
    with torch.no_grad():
        ref = model.inference(image, metas((120, 100)))
        out = model.inference(padded, [meta])
    torch.testing.assert_close(out[..., :120, :100], ref)
    assert out[..., 120:, :].abs().max() == 0


def test_slide_inference_equals_hand_average(trained):
    model = copy.deepcopy(trained).eval()
    model.test_cfg = dict(mode='slide', crop_size=(96, 96), stride=(64, 64))
    image = torch.randn(2, 3, 96, 170)
    with torch.no_grad():
        out = model.inference(image, metas((96, 170), 2))
        for i in range(2):
            total = torch.zeros(1, 3, 96, 170)
            count = torch.zeros(1, 1, 96, 170)
            for x in (0, 64, 74):  # the last window is shifted back to end at the border
                total[..., x:x + 96] += crop_scores(model, image[i:i + 1, :, :, x:x + 96])
                count[..., x:x + 96] += 1
            torch.testing.assert_close(out[i:i + 1], total / count, rtol=1e-4, atol=1e-5)


def test_slide_on_an_image_smaller_than_the_window_is_a_clear_error(trained):
    model = copy.deepcopy(trained).eval()
    model.test_cfg = dict(mode='slide', crop_size=(96, 96), stride=(64, 64))
    with pytest.raises(ValueError, match=r"smaller than the sliding window.*'reference'"):
        with torch.no_grad():
            model.inference(torch.randn(1, 3, 80, 200), metas((80, 200)))


def test_whole_inference_and_predict_at_original_size(trained):
    model = copy.deepcopy(trained).eval()
    model.test_cfg = dict(mode='whole')
    data = batch(num=1)
    data['data_samples'][0].set_metainfo(dict(ori_shape=(50, 70)))
    with torch.no_grad():
        (result, ) = model.test_step(data)
    assert result.seg_logits.data.shape == (3, 50, 70)
    assert result.pred_sem_seg.data.shape == (1, 50, 70)
    torch.testing.assert_close(result.pred_sem_seg.data[0], result.seg_logits.data.argmax(0))


def head_scores(model, view, size):
    """CAT-Seg's view path written out: the view resized (bilinear) to CLIP's input size,
    CLIP + head, logits resized to ``size``, sigmoid."""
    clip_in = F.interpolate(view, size=(96, 96), mode='bilinear', align_corners=False)
    feats = model.extract_feat(clip_in)
    logits = model.decode_head.forward(feats)
    return F.interpolate(logits, size=size, mode='bilinear', align_corners=False).sigmoid()


def test_training_crop_larger_than_clip_input_is_resized_loss_at_crop_size(trained):
    """ViT-L/14 reference: 384 crops resized to 336 inside the model, loss at 384 (here: 128
    crops, CLIP input 96). Reference: BCE with logits against one-hot targets, ignored pixels
    all-negative, the logits of the resized crop upsampled to the 128 labels."""
    model = copy.deepcopy(trained).train()
    data = model.data_preprocessor(batch(num=2, size=(128, 128)), True)
    inputs, samples = data['inputs'], data['data_samples']
    assert inputs.shape[2:] == (128, 128) and model.backbone_input_size == (96, 96)
    loss = model.loss(inputs, samples)['decode.loss_bce']
    labels = torch.stack([s.gt_sem_seg.data[0] for s in samples])
    with torch.no_grad():
        clip_in = F.interpolate(inputs, size=(96, 96), mode='bilinear', align_corners=False)
        logits = model.decode_head.forward(model.extract_feat(clip_in))
        logits = F.interpolate(logits, size=(128, 128), mode='bilinear', align_corners=False)
        target = torch.zeros_like(logits)
        valid = labels != 255
        target.permute(0, 2, 3, 1)[valid] = F.one_hot(labels[valid], 3).float()
        expected = F.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    # without the resize CLIP sees 128 pixels (8x8 tokens): a different model output
    model.resize_to_backbone = False
    unresized = model.loss(inputs, samples)['decode.loss_bce']
    assert not torch.allclose(unresized, loss, rtol=1e-5, atol=0)


def test_reference_views_larger_than_clip_input(trained):
    """ViT-L/14 reference test: 384 views (here 128) from the resized image plus a global view,
    each resized to CLIP's input size (96), logits back to the view size, sigmoid."""
    model = copy.deepcopy(trained).eval()
    model.test_cfg = dict(mode='reference', resize_to=(160, 160), crop_size=(128, 128),
                          stride=(64, 64))
    image = torch.randn(1, 3, 120, 100)
    with torch.no_grad():
        out = model.inference(image, metas((120, 100)))
        big = F.interpolate(image, size=(160, 160), mode='bilinear', align_corners=False)
        total = torch.zeros(1, 3, 160, 160)
        count = torch.zeros(1, 1, 160, 160)
        for y in (0, 32):
            for x in (0, 32):
                view = big[..., y:y + 128, x:x + 128]
                total[..., y:y + 128, x:x + 128] += head_scores(model, view, (128, 128))
                count[..., y:y + 128, x:x + 128] += 1
        glob = head_scores(model, F.interpolate(image, size=(128, 128), mode='bilinear',
                                                align_corners=False), (128, 128))
        glob = F.interpolate(glob, size=(160, 160), mode='bilinear', align_corners=False)
        ref160 = (total / count + glob) / 2
        ref = F.interpolate(ref160, size=(120, 100), mode='bilinear', align_corners=False)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    # predict(): from 640x640 (here 160) to the original size in one resize, as the reference
    data = dict(inputs=[torch.randint(0, 256, (3, 120, 100), dtype=torch.uint8)],
                data_samples=[SegDataSample()])
    data['data_samples'][0].set_metainfo(dict(ori_shape=(90, 75), img_shape=(120, 100)))
    processed = model.data_preprocessor(data, False)
    with torch.no_grad():
        (result, ) = model.predict(processed['inputs'], processed['data_samples'])
        image = processed['inputs']
        ref160 = model._reference_scores(image, dict(img_shape=(120, 100)))
        one_step = F.interpolate(ref160, size=(90, 75), mode='bilinear', align_corners=False)
        two_step = F.interpolate(model.inference(image, metas((120, 100))), size=(90, 75),
                                 mode='bilinear', align_corners=False)
    torch.testing.assert_close(result.seg_logits.data, one_step[0])
    assert not torch.allclose(one_step, two_step, atol=1e-4)


def test_whole_mode_sigmoid_before_resize(trained):
    """The reference's non-sliding path: sigmoid at the head's resolution, then one resize to
    the original size; test_cfg.sigmoid_before_resize=False gives MMSeg's order."""
    model = copy.deepcopy(trained).eval()
    data = batch(num=2)
    for sample in data['data_samples']:
        sample.set_metainfo(dict(ori_shape=(50, 70)))
    processed = model.data_preprocessor(data, False)
    inputs = processed['inputs']
    with torch.no_grad():
        logits = model.decode_head.forward(model.extract_feat(inputs))  # [2, 3, 24, 24]
        reference = F.interpolate(logits.sigmoid(), size=(50, 70), mode='bilinear',
                                  align_corners=False)
        mmseg = F.interpolate(F.interpolate(logits, size=(96, 96), mode='bilinear',
                                            align_corners=False).sigmoid(),
                              size=(50, 70), mode='bilinear', align_corners=False)
        results = {}
        for flag in (True, False):
            model.test_cfg = dict(mode='whole', sigmoid_before_resize=flag)
            results[flag] = model.predict(inputs, copy.deepcopy(processed['data_samples']))
    for i in range(2):
        torch.testing.assert_close(results[True][i].seg_logits.data, reference[i])
        torch.testing.assert_close(results[False][i].seg_logits.data, mmseg[i])
    assert not torch.allclose(reference, mmseg, atol=1e-4)


def test_flip_is_undone_in_the_one_step_path(trained):
    model = copy.deepcopy(trained).eval()
    data = batch(num=1, size=(100, 130))
    sample = data['data_samples'][0]
    flipped = copy.deepcopy(data)
    flipped['inputs'][0] = flipped['inputs'][0].flip(-1)
    flipped['data_samples'][0].set_metainfo(dict(flip=True, flip_direction='horizontal'))
    with torch.no_grad():
        (plain, ) = model.test_step(data)
        (back, ) = model.test_step(flipped)
    assert sample.metainfo['ori_shape'] == (100, 130)
    # the model is not flip-equivariant; undoing the flip only maps the flipped image's
    # scores back: compare with the scores of the flipped image, flipped by hand
    with torch.no_grad():
        processed = model.data_preprocessor(copy.deepcopy(flipped), False)
        raw = model._reference_scores(processed['inputs'], {})
        raw = F.interpolate(raw, size=(100, 130), mode='bilinear', align_corners=False)
    torch.testing.assert_close(back.seg_logits.data, raw[0].flip(-1))
    assert plain.seg_logits.data.shape == back.seg_logits.data.shape


def test_vocabulary_switch_to_a_different_length(trained):
    model = copy.deepcopy(trained).eval()
    data = batch(num=1, size=(100, 130))
    for names in (['cat'], [f'class {i}' for i in range(20)]):  # 1 class, and > pad_len=16
        model.set_vocabulary(names)
        with torch.no_grad():
            (result, ) = model.test_step(copy.deepcopy(data))
        n = len(names)
        assert result.seg_logits.data.shape == (n, 100, 130)
        pred = result.pred_sem_seg.data
        assert pred.min() >= 0 and pred.max() < n
    # back to training on the 3 training classes
    model.set_vocabulary(['background', 'square', 'sky, heaven'])
    log = train_one_step(model)
    assert torch.isfinite(log['loss'])


def test_bf16_autocast_training_step():
    model = build_tiny(with_cp=True)
    model.set_vocabulary(['background', 'square', 'sky'])
    model.train()
    data = model.data_preprocessor(batch(), True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        losses = model.loss(data['inputs'], data['data_samples'])
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    loss.float().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert model.backbone.adapter.generators['text'].grad.abs().sum() > 0


def test_bad_inputs():
    model = build_tiny()
    with pytest.raises(RuntimeError, match='VocabularyHook'):
        model._forward(torch.randn(1, 3, 96, 96))
    with pytest.raises(ValueError, match='empty'):
        model.set_vocabulary([])
    with pytest.raises(ValueError, match='Duplicate'):
        model.set_vocabulary(['sky', 'road', 'sky'])
    with pytest.raises(ValueError, match='test_cfg.mode'):
        build_tiny(test_cfg=dict(mode='sliding'))
    with pytest.raises(FileNotFoundError, match='weights file'):
        build_tiny(pretrained='/nowhere/tiny_clip.pt')


def test_set_vocabulary_via_config():
    cfg = Config.fromfile(TINY_CFG)
    cfg.model.class_names = ['a', 'b']
    model = MODELS.build(cfg.model)
    assert model.vocabulary == ('a', 'b')


@pytest.mark.parametrize('name, arch, size, guidance, width', [
    ('hclip_vitb16', 'ViT-B-16', 384, (3, 7), 512),
    ('hclip_vitl14', 'ViT-L-14-336', 336, (7, 15), 768)])
def test_reference_configs(name, arch, size, guidance, width):
    cfg = Config.fromfile(osp.join(ROOT, 'configs', '_base_', 'models', name + '.py'))
    m = cfg.model
    assert m.type == 'HCLIPSegmentor' and m.backbone.pretrained == 'openai'
    assert m.backbone.arch == arch and m.backbone.quick_gelu is True  # OpenAI weights
    assert m.backbone.img_size == size and tuple(m.backbone.guidance_layers) == guidance
    assert m.decode_head.in_channels == width and m.decode_head.pad_len == 256
    # crops and test views are 384 for both (ViT-L/14: resized to 336 inside the segmentor)
    assert tuple(m.data_preprocessor.size) == (384, 384)
    torch.testing.assert_close(torch.tensor(m.data_preprocessor.mean),
                               torch.tensor([122.77, 116.75, 104.09]), atol=0.01, rtol=0)
    torch.testing.assert_close(torch.tensor(m.data_preprocessor.std),
                               torch.tensor([68.50, 66.63, 70.32]), atol=0.01, rtol=0)
    assert m.data_preprocessor.bgr_to_rgb
    assert m.test_cfg.mode == 'reference' and tuple(m.test_cfg.resize_to) == (640, 640)
    assert tuple(m.test_cfg.crop_size) == (384, 384) and tuple(m.test_cfg.stride) == (256, 256)
    assert [h.type for h in cfg.custom_hooks] == ['CPUAllocatorHook', 'VocabularyHook',
                                                  'HypersphericalEnergyHook', 'ModelSettingsHook']


@pytest.mark.slow
def test_vitb16_config_builds_and_predicts():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', '_base_', 'models', 'hclip_vitb16.py'))
    cfg.model.backbone.pretrained = None
    cfg.model.test_cfg = dict(mode='whole')
    model = MODELS.build(cfg.model).eval()
    model.set_vocabulary(['sky', 'road', 'tree'])
    with torch.no_grad():
        out = model.inference(torch.randn(1, 3, 384, 384), metas((384, 384)))
    assert out.shape == (1, 3, 384, 384)
