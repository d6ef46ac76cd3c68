"""HCLIPTextNeck: prompts, synonyms, equality with open_clip, eval cache keyed by vocabulary."""
import pytest
import torch
import torch.nn.functional as F

import mmseg_hclip  # noqa: F401  (registers the modules)
from mmseg_hclip.models.backbones import HCLIPBackbone
from mmseg_hclip.models.necks import HCLIPTextNeck

TINY = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=64, layers=2, width=64, head_width=32, patch_size=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))
TEMPLATES = ['a photo of a {}.', 'A photo of a {} in the scene']


@pytest.fixture(scope='module')
def backbone():
    torch.manual_seed(0)
    return HCLIPBackbone(arch=TINY, pretrained=None, img_size=64, guidance_layers=(0, ),
                         adapter=dict(block_size=16))


def plain_embeddings(clip, tokenizer, prompts):
    with torch.no_grad():
        return F.normalize(clip.encode_text(tokenizer(prompts)), dim=-1)


def test_at_init_equals_plain_open_clip(backbone):
    names = ['building, edifice', 'sky', 'tv monitor']
    neck = HCLIPTextNeck(templates=TEMPLATES).train()
    backbone.train()
    with torch.no_grad():
        out = neck(backbone, names, backbone.adapted_weights())
    assert out.shape == (3, 2, 32)
    prompts = [t.format(n) for n in ('building', 'sky', 'tv monitor') for t in TEMPLATES]
    ref = plain_embeddings(backbone.clip, backbone.tokenizer, prompts).view(3, 2, 32)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3, 2))


def test_average_synonyms(backbone):
    neck = HCLIPTextNeck(templates=TEMPLATES, synonyms='average').eval()
    backbone.eval()
    with torch.no_grad():
        out = neck(backbone, ['building, edifice', 'sky'])
    tok = backbone.tokenizer
    parts = [plain_embeddings(backbone.clip, tok, [t.format(s) for t in TEMPLATES])
             for s in ('building', 'edifice', 'sky')]
    ref = torch.stack([F.normalize(parts[0] + parts[1], dim=-1), parts[2]])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_template_sets():
    assert HCLIPTextNeck().templates == ('A photo of a {} in the scene', )
    t80 = HCLIPTextNeck(templates='imagenet80').templates
    assert len(t80) == 80 and all(t.count('{}') == 1 for t in t80)
    assert HCLIPTextNeck(templates=['{} here']).prompts(['cat, kitty'])[0] == ['cat here']


def test_eval_cache_reused_and_rebuilt_per_vocabulary(backbone):
    neck = HCLIPTextNeck(templates=TEMPLATES).eval()
    backbone.eval()
    voc_a, voc_b = ['cat', 'dog'], ['road', 'sky', 'tree']
    with torch.no_grad():
        a1 = neck(backbone, voc_a)
        a2 = neck(backbone, voc_a)
        assert neck.num_encodes == 1 and a2 is a1  # reused
        b = neck(backbone, voc_b)  # another vocabulary in the same process: rebuilt
        assert neck.num_encodes == 2 and b.shape == (3, 2, 32)
        fresh = HCLIPTextNeck(templates=TEMPLATES).eval()(backbone, voc_b)
        torch.testing.assert_close(b, fresh)
        assert neck(backbone, tuple(voc_a)) is a1 and neck.num_encodes == 2
    # a training step changes the weights: the next eval call recomputes
    backbone.train()
    neck.train()
    with torch.no_grad():
        neck(backbone, voc_a, backbone.adapted_weights())
        neck(backbone, voc_a, backbone.adapted_weights())
    assert neck.num_encodes == 4  # never cached in training
    backbone.eval()
    neck.eval()
    with torch.no_grad():
        neck(backbone, voc_a, backbone.adapted_weights())
    assert neck.num_encodes == 5


def test_cache_follows_loaded_weights(backbone):
    neck = HCLIPTextNeck(templates=TEMPLATES).eval()
    backbone.eval()
    with torch.no_grad():
        before = neck(backbone, ['cat', 'dog'], backbone.adapted_weights())
        state = {k: v.clone() for k, v in backbone.state_dict().items()}
        state['adapter.generators.text'] += 0.1 * torch.randn_like(state['adapter.generators.text'])
        backbone.load_state_dict(state)
        after = neck(backbone, ['cat', 'dog'], backbone.adapted_weights())
    assert neck.num_encodes == 2
    assert not torch.allclose(before, after, atol=1e-4)


@pytest.mark.parametrize('names, error, match', [
    ([], ValueError, 'empty'),
    (None, ValueError, 'empty'),
    ('cat', TypeError, 'list of class names'),
    (['cat', 'dog', 'cat'], ValueError, r"Duplicate class names.*'cat' at \[0, 2\]"),
    (['cat', ''], ValueError, 'empty'),
    (['cat', 3], TypeError, 'strings'),
])
def test_bad_vocabulary(backbone, names, error, match):
    with pytest.raises(error, match=match):
        HCLIPTextNeck()(backbone, names)


def test_bad_config():
    with pytest.raises(ValueError, match='exactly one'):
        HCLIPTextNeck(templates=['no placeholder'])
    with pytest.raises(ValueError, match='imagenet80'):
        HCLIPTextNeck(templates='fancy')
    with pytest.raises(ValueError, match='first'):
        HCLIPTextNeck(synonyms='all')
