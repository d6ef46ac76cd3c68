"""Every config under configs/ and projects/: loads, builds its model (tiny CLIP swapped in),
differs from its parent exactly in the knobs it names, and says what it claims.

Real-size models are never built: a config's named open_clip architecture is replaced by the
tiny inline CLIP of ``configs/_base_/models/hclip_tiny.py`` (block sizes and LoRA ranks scaled
by 1/8 so they divide the tiny widths), and the real-size parameter counts come from a ViT-B/16
built on the ``meta`` device (no memory, no download).
"""
import argparse
import copy
import glob
import os.path as osp
import re

import pytest
import torch
from mmengine.config import Config, DictAction
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
register_all_modules(init_default_scope=True)

ALL_CONFIGS = sorted(
    osp.relpath(p, ROOT)
    for p in glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True) +
    glob.glob(osp.join(ROOT, 'projects', '*', 'configs', '**', '*.py'), recursive=True))
MAIN = {
    'vitb16': 'configs/hclip_vitb16_coco-stuff.py',
    'vitl14': 'configs/hclip_vitl14_coco-stuff.py',
}
OFFICIAL = 'configs/hclip_vitb16_coco-stuff_official.py'
PROJECT = 'projects/peft_baselines/configs'

# benchmark -> (dataset type, data_root, ignore index, metric)
BENCHMARKS = {
    'ade847': ('ADE20K847Dataset', 'data/ade847', 65535, 'IoUMetric16'),
    'pc459': ('PascalContext459Dataset', 'data/pc459', 65535, 'IoUMetric16'),
    'ade150': ('ADE20K150Dataset', 'data/ade150', 255, 'ReferenceIoUMetric'),
    'pc59': ('PascalContext59Dataset', 'data/pc59', 255, 'ReferenceIoUMetric'),
    'voc20': ('PascalVOC20Dataset', 'data/voc20', 255, 'ReferenceIoUMetric'),
    'voc20b': ('PascalVOC20bDataset', 'data/voc20b', 255, 'BackgroundMappedIoUMetric'),
}
EVAL_KEYS = ('val_dataloader', 'test_dataloader', 'val_evaluator', 'test_evaluator')
ADAPTER = 'model.backbone.adapter'

# child config -> (parent config, the keys (prefixes of flattened keys) it may change; each
# must change). An empty tuple: the child is its parent (a table row equal to the main config).
ABL = 'configs/ablations/hclip_vitb16_{}_coco-stuff.py'
CHILDREN = {
    ABL.format('frozen'): (MAIN['vitb16'], (ADAPTER, )),
    ABL.format('pof-only'): (MAIN['vitb16'], (f'{ADAPTER}.dcrc', )),
    ABL.format('dcrc-only'): (MAIN['vitb16'], (f'{ADAPTER}.train', )),
    ABL.format('pof-dcrc'): (MAIN['vitb16'], ()),
    ABL.format('q64'): (MAIN['vitb16'], (f'{ADAPTER}.block_size', )),
    ABL.format('q128'): (MAIN['vitb16'], ()),
    ABL.format('q256'): (MAIN['vitb16'], (f'{ADAPTER}.block_size', )),
    ABL.format('ortho-none'): (MAIN['vitb16'], (f'{ADAPTER}.orthogonal', )),
    ABL.format('ortho-all'): (MAIN['vitb16'], (f'{ADAPTER}.orthogonal', )),
    ABL.format('ortho-text'): (MAIN['vitb16'], ()),
    ABL.format('official-sides'): (MAIN['vitb16'], (f'{ADAPTER}.sides', )),
    ABL.format('dcrc-linear'): (MAIN['vitb16'], (f'{ADAPTER}.dcrc', )),
    OFFICIAL: (MAIN['vitb16'], (
        f'{ADAPTER}.sides', f'{ADAPTER}.dcrc', f'{ADAPTER}.dcrc_per_layer',
        f'{ADAPTER}.cayley_convention', 'optimizer', 'optim_wrapper', 'param_scheduler',
        'base_lr', 'clip_lr', 'head_lr_mult', 'custom_hooks')),
    # ViT-L/14@336px: only the model; crops, test views and data are the ViT-B/16 ones (384)
    MAIN['vitl14']: (MAIN['vitb16'], (
        'model.backbone.arch', 'model.backbone.img_size', 'model.backbone.guidance_layers',
        'model.decode_head.in_channels', 'model.decode_head.guidance_channels')),
}
for _arch in MAIN:
    for _bench, (_, _, _ignore, _metric) in BENCHMARKS.items():
        # COCO-Stuff's metric is ReferenceIoUMetric with ignore 255: restated, not changed,
        # where equal
        _knobs = EVAL_KEYS if (_ignore, _metric) != (255, 'ReferenceIoUMetric') else EVAL_KEYS[:2]
        CHILDREN[f'configs/hclip_{_arch}_{_bench}.py'] = (MAIN[_arch], _knobs)
for _method in ('lora-r64', 'attn-qv'):
    CHILDREN[f'{PROJECT}/{_method}_vitb16_coco-stuff.py'] = (MAIN['vitb16'],
                                                            (ADAPTER, 'custom_imports.imports'))
    for _bench in BENCHMARKS:
        CHILDREN[f'{PROJECT}/{_method}_vitb16_{_bench}.py'] = (
            f'configs/hclip_vitb16_{_bench}.py', (ADAPTER, 'custom_imports.imports'))
# CAT-Seg's released weights (tools/model_converters/catseg2mmseg.py): no adapter
for _arch in MAIN:
    for _bench in BENCHMARKS:
        CHILDREN[f'configs/catseg/catseg_{_arch}_{_bench}.py'] = (
            f'configs/hclip_{_arch}_{_bench}.py', (ADAPTER, ))

_CACHE = {}


def load(path):
    """Config.fromfile, cached (a loaded config is deep-copied before any change)."""
    if path not in _CACHE:
        _CACHE[path] = Config.fromfile(osp.join(ROOT, path))
    return _CACHE[path]


def flatten(value, prefix=''):
    """Nested dicts / lists -> {'a.b.0.c': leaf}."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list, tuple))
                                                  for v in value):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: value}
    out = {}
    for key, val in items:
        out.update(flatten(val, f'{prefix}.{key}' if prefix else str(key)))
    if not out and prefix:  # an empty dict / list is a leaf
        out[prefix] = value
    return out


def differing_keys(a, b):
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return {k for k in fa.keys() | fb.keys() if k not in fa or k not in fb or fa[k] != fb[k]}


# ------------------------------------------------------------------ load + build (tiny)
TINY = load('configs/_base_/models/hclip_tiny.py').model
SIZE_KEYS = ('arch', 'pretrained', 'img_size', 'guidance_layers')


def tiny_model_cfg(model_cfg):
    """The config's model with the tiny CLIP and a head of matching width.

    What a config chooses is kept: segmentor, neck, loss, ignore settings, the adapter and its
    variant (q and the LoRA rank are scaled by 1/8: 128 -> 16 divides the tiny width 64).
    """
    cfg = copy.deepcopy(model_cfg)
    if not isinstance(cfg.backbone.get('arch'), str):  # already tiny (quickstart)
        return cfg
    for key in SIZE_KEYS:
        cfg.backbone[key] = copy.deepcopy(TINY.backbone[key])
    adapter = cfg.backbone.get('adapter')
    if adapter is not None:
        for key in ('block_size', 'rank'):
            if key in adapter:
                adapter[key] //= 8
    head = copy.deepcopy(TINY.decode_head)
    for key in ('type', 'loss_decode', 'ignore_index', 'ignore_as_negative'):
        if key in cfg.decode_head:
            head[key] = cfg.decode_head[key]
    cfg.decode_head = head
    cfg.data_preprocessor.size = TINY.data_preprocessor.size
    cfg.test_cfg = copy.deepcopy(TINY.test_cfg)
    return cfg


def random_batch(num=2, size=(96, 96), num_classes=3, seed=0):
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


_CHECKED_MODELS = {}


def build_and_check(model_cfg):
    """Build a (tiny) model, train one step, predict once; returns the adapter's class name."""
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.set_vocabulary(['background', 'square', 'sky, heaven'])
    model.train()
    data = model.data_preprocessor(random_batch(), True)
    losses = model.loss(data['inputs'], data['data_samples'])
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(loss)
    loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(p.requires_grad for p in model.backbone.clip.parameters())
    assert all(n.startswith(('backbone.adapter.', 'decode_head.')) for n in trainable)
    adapter = model.backbone.adapter
    if adapter is not None:
        grads = [p.grad for p in adapter.parameters() if p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        out = model.inference(data['inputs'][:1], [s.metainfo for s in data['data_samples'][:1]])
    assert out.shape[:2] == (1, 3) and torch.isfinite(out).all()
    return None if adapter is None else type(adapter).__name__


@pytest.mark.parametrize('path', ALL_CONFIGS)
def test_config_loads_and_builds(path):
    """Load; build the model (tiny CLIP), one training step and one prediction.

    Configs whose (tiny) model dicts are identical, e.g. a training config and its
    benchmark configs, share one build: the dict fully determines the model.
    """
    cfg = load(path)
    if 'model' not in cfg:  # dataset / schedule / runtime fragments
        assert path.startswith('configs/_base_/'), f'{path} defines no model'
        return
    model_cfg = tiny_model_cfg(cfg.model)
    key = repr(sorted(flatten(model_cfg.to_dict()).items()))
    if key not in _CHECKED_MODELS:
        _CHECKED_MODELS[key] = build_and_check(model_cfg)
    adapter_cfg = cfg.model.backbone.get('adapter')
    expected = None if adapter_cfg is None else adapter_cfg.get('type', 'HCLIPAdapter')
    assert _CHECKED_MODELS[key] == expected


# ------------------------------------------------------------------ parents and children
def test_every_config_is_checked():
    """A new top-level / ablation / project config must be added to CHILDREN (or MAIN)."""
    checked = set(CHILDREN) | set(MAIN.values())
    unchecked = [p for p in ALL_CONFIGS
                 if not p.startswith(('configs/_base_/', 'configs/quickstart/')) and
                 p not in checked]
    assert not unchecked, f'add these to CHILDREN with the keys they change: {unchecked}'


@pytest.mark.parametrize('child', sorted(CHILDREN))
def test_child_differs_from_parent_exactly_in_its_knobs(child):
    parent, knobs = CHILDREN[child]
    diff = differing_keys(load(child), load(parent))
    outside = sorted(k for k in diff if not k.startswith(knobs))
    assert not outside, f'{child} also changes {outside}'
    untouched = [k for k in knobs if not any(d == k or d.startswith(k + '.') for d in diff)]
    assert not untouched, f'{child} does not change {untouched}'


def documented_cfg_options(path):
    """The `--cfg-options ...` of a config's header comment, parsed as tools/train.py does."""
    text = open(osp.join(ROOT, path)).read()
    match = re.search(r'--cfg-options ((?:\S+=\S+ ?)+)', text)
    if match is None:
        return None
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(['--cfg-options', *match.group(1).split()]).cfg_options


@pytest.mark.parametrize('path', sorted(glob.glob(osp.join(ROOT, 'configs', 'ablations', '*.py'))))
def test_ablation_header_cfg_options_reproduce_it(path):
    """The header's `--cfg-options` (for evaluating the ablation with a benchmark config),
    applied to the main config, give the ablation config itself."""
    path = osp.relpath(path, ROOT)
    options = documented_cfg_options(path)
    parent, knobs = CHILDREN[path]
    assert (options is None) == (not knobs), path
    cfg = copy.deepcopy(load(parent))
    if options:
        cfg.merge_from_dict(options)
    assert flatten(cfg.to_dict()) == flatten(load(path).to_dict())


# ------------------------------------------------------------------ training configs
def random_crop(cfg):
    (crop, ) = [t for t in cfg.train_dataloader.dataset.pipeline if t['type'] == 'RandomCrop']
    return tuple(crop['crop_size'])


def test_paper_recipe_vitb16():
    cfg = load(MAIN['vitb16'])
    assert cfg.model == load('configs/_base_/models/hclip_vitb16.py').model
    data = load('configs/_base_/datasets/coco_stuff171.py')
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader', 'val_evaluator',
                'test_evaluator', 'train_pipeline', 'test_pipeline'):
        assert cfg[key] == data[key], key  # the COCO-Stuff data come from the dataset base
    adapter = cfg.model.backbone.adapter
    assert adapter == dict(type='HCLIPAdapter', block_size=128, orthogonal='text', sides='input',
                           dcrc='mlp',
                           train='blocks+dcrc', targets=('q', 'k', 'v', 'out'))
    assert cfg.model.backbone.arch == 'ViT-B-16' and cfg.model.backbone.pretrained == 'openai'
    assert cfg.optim_wrapper.optimizer == dict(type='Adam', lr=5e-6, weight_decay=1e-4)
    head_mult = cfg.optim_wrapper.paramwise_cfg.custom_keys['decode_head']['lr_mult']
    assert cfg.optim_wrapper.optimizer.lr * head_mult == pytest.approx(2e-4)
    assert 'clip_grad' not in cfg.optim_wrapper
    assert cfg.train_cfg.max_iters == 80000 and cfg.train_dataloader.batch_size == 1
    assert cfg.auto_scale_lr.base_batch_size == 4
    assert cfg.model.decode_head.type == 'HCLIPCostAggHead' and cfg.model.test_cfg.mode == \
        'reference'


def test_vitl14_recipe():
    """OpenAI ViT-L/14@336px (24x24 native grid); 384 crops and views, resized to 336 inside."""
    import open_clip
    cfg = load(MAIN['vitl14'])
    base = load('configs/_base_/models/hclip_vitl14.py')
    assert cfg.model == base.model and cfg.data_preprocessor == base.data_preprocessor
    assert cfg.optim_wrapper == load(MAIN['vitb16']).optim_wrapper
    backbone = cfg.model.backbone
    assert backbone.arch == 'ViT-L-14-336' and backbone.img_size == 336
    assert backbone.pretrained == 'openai' and backbone.quick_gelu
    vision = open_clip.get_model_config(backbone.arch)['vision_cfg']
    grid = vision['image_size'] // vision['patch_size']
    assert grid == 24 == cfg.model.decode_head.feature_size[0]
    assert vision['image_size'] == backbone.img_size  # the native grid: no positional resize
    assert cfg.model.get('resize_to_backbone', True)
    assert random_crop(cfg) == (384, 384) == tuple(cfg.model.data_preprocessor.size)
    test_cfg = cfg.model.test_cfg
    assert (test_cfg.mode, tuple(test_cfg.resize_to), tuple(test_cfg.crop_size),
            tuple(test_cfg.stride)) == ('reference', (640, 640), (384, 384), (256, 256))


@pytest.mark.parametrize('path', [MAIN['vitb16'], MAIN['vitl14'], OFFICIAL])
def test_training_pipeline_is_the_reference(path):
    """detectron2's mapper of the reference: Pillow decode, short side 384 (long side at most
    1333, Pillow bilinear), 384 crop without category cap, colour, flip, pad 128 / ignore."""
    cfg = load(path)
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert [t['type'] for t in pipeline] == [
        'LoadImageFromFile', 'LoadAnnotations16', 'PillowResizeShortestEdge', 'RandomCrop',
        'PhotoMetricDistortion', 'RandomFlip', 'Pad', 'PackSegInputs']
    assert pipeline[0].imdecode_backend == 'pillow'
    assert (pipeline[2].scale, pipeline[2].max_size) == (384, 1333)
    assert pipeline[3].get('cat_max_ratio', 1.0) == 1.0
    assert random_crop(cfg) == (384, 384) == tuple(cfg.model.data_preprocessor.size)
    assert tuple(pipeline[6].size) == (384, 384)
    assert pipeline[6].pad_val == dict(img=128, seg=255)
    assert cfg.model.backbone.img_size == (336 if 'vitl14' in path else 384)


def test_official_recipe():
    from mmseg_hclip.peft import OFFICIAL_COMPAT
    cfg = load(OFFICIAL)
    sched = load('configs/_base_/schedules/schedule_80k_adamw_official.py')
    for key in ('optimizer', 'optim_wrapper', 'param_scheduler', 'train_cfg', 'default_hooks'):
        assert cfg[key] == sched[key], key
    adapter = cfg.model.backbone.adapter
    assert {k: adapter[k] for k in OFFICIAL_COMPAT} == OFFICIAL_COMPAT
    assert adapter.block_size == 128 and adapter.orthogonal == 'text'
    assert cfg.optim_wrapper.clip_grad.max_norm == 0.01
    assert cfg.optim_wrapper.optimizer.lr * 0.01 == pytest.approx(cfg.clip_lr) == 2e-6
    assert cfg.custom_hooks[:-1] == load(MAIN['vitb16']).custom_hooks
    assert cfg.custom_hooks[-1] == dict(type='Float32MatmulPrecisionHook', precision='high')


def test_official_schedule_is_cosine_from_iteration_0():
    """detectron2's WarmupCosineLR with WARMUP_ITERS 0: lr(t) = lr0 (1 + cos(pi t / T)) / 2."""
    import math
    from mmengine.registry import PARAM_SCHEDULERS
    cfg = load(OFFICIAL)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=optimizer))
                  for s in copy.deepcopy(cfg.param_scheduler)]
    seen = {}
    for t in range(80001):
        if t in (0, 1, 1500, 40000, 79999, 80000):
            seen[t] = optimizer.param_groups[0]['lr']
        optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
    for t, lr in seen.items():
        assert lr == pytest.approx(2e-4 * (1 + math.cos(math.pi * t / 80000)) / 2,
                                   rel=1e-6, abs=1e-12), t


def test_official_weight_decay_and_lr_groups():
    """Every trainable parameter gets detectron2's group settings: weight decay 0 in a
    normalisation layer (WEIGHT_DECAY_NORM 0), else 1e-4; lr x0.01 in the CLIP backbone."""
    from mmengine.optim import build_optim_wrapper
    cfg = load(OFFICIAL)
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg(cfg.model))
    wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    group_of = {id(p): g for g in wrapper.optimizer.param_groups for p in g['params']}
    norm_types = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm,
                  torch.nn.LayerNorm, torch.nn.modules.instancenorm._InstanceNorm,
                  torch.nn.LocalResponseNorm)
    norms = 0
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            group = group_of[id(param)]
            is_norm = isinstance(module, norm_types)
            norms += is_norm
            assert group['weight_decay'] == (0.0 if is_norm else 1e-4), f'{module_name}.{name}'
            lr = 2e-4 * (0.01 if module_name.startswith('backbone') else 1.0)
            assert group['lr'] == pytest.approx(lr), f'{module_name}.{name}'
            assert not isinstance(module, torch.nn.Embedding)  # detectron2: no decay either
    assert norms > 0  # the head has LayerNorms and GroupNorms


# ------------------------------------------------------------------ evaluation configs
@pytest.mark.parametrize('arch', sorted(MAIN))
@pytest.mark.parametrize('bench', sorted(BENCHMARKS))
def test_eval_config_swaps_test_set_and_protocol(arch, bench):
    cfg = load(f'configs/hclip_{arch}_{bench}.py')
    train = load(MAIN[arch])
    dataset_type, data_root, ignore, metric = BENCHMARKS[bench]
    for loader in ('val_dataloader', 'test_dataloader'):
        ds = cfg[loader].dataset
        assert (ds.type, ds.data_root) == (dataset_type, data_root)
        # detectron2's test mapper: short side 640 (long side at most 2560), Pillow bilinear,
        # before the labels are loaded (scored at the original size)
        assert [t['type'] for t in ds.pipeline] == [
            'LoadImageFromFile', 'PillowResizeShortestEdge', 'LoadAnnotations16', 'PackSegInputs']
        assert ds.pipeline[0].imdecode_backend == 'pillow'
        assert (ds.pipeline[1].scale, ds.pipeline[1].max_size) == (640, 2560)
        assert cfg[loader].batch_size == 1 and not cfg[loader].sampler.shuffle
    for evaluator in ('val_evaluator', 'test_evaluator'):
        assert (cfg[evaluator].type, cfg[evaluator].ignore_index) == (metric, ignore)
    if bench == 'voc20b':
        assert cfg.test_evaluator.background_index == 20
    benchmark_base = load(f'configs/_base_/datasets/{bench}.py')
    for key in EVAL_KEYS:
        assert cfg[key] == benchmark_base[key], key
    assert cfg.model == train.model and cfg.train_dataloader == train.train_dataloader
    assert cfg.optim_wrapper == train.optim_wrapper


@pytest.mark.parametrize('method', ['lora-r64', 'attn-qv'])
def test_project_eval_configs_use_the_trained_adapter(method):
    train = load(f'{PROJECT}/{method}_vitb16_coco-stuff.py')
    for bench in BENCHMARKS:
        cfg = load(f'{PROJECT}/{method}_vitb16_{bench}.py')
        assert cfg.model == train.model and cfg.custom_imports == train.custom_imports
        for key in EVAL_KEYS:
            assert cfg[key] == load(f'configs/hclip_vitb16_{bench}.py')[key]


# ------------------------------------------------------------------ what the headers claim
@pytest.fixture(scope='module')
def meta_vitb16():
    import open_clip
    return open_clip.create_model('ViT-B-16', pretrained=None, device='meta')


def claimed_counts(path):
    text = open(osp.join(ROOT, path)).read()
    match = re.search(r'Ours: ([\d,]+) trainable(?: CLIP parameters)? \(([\d,]+) effective',
                      text) or re.search(r'Ours: ([\d,]+) trainable', text)
    return [int(g.replace(',', '')) for g in match.groups()] if match else None


@pytest.mark.parametrize('path', sorted(
    p for p in CHILDREN if p.startswith('configs/ablations/') or p == OFFICIAL or
    p.endswith('coco-stuff.py') and p.startswith(PROJECT)))
def test_stated_parameter_counts(path, meta_vitb16):
    """The counts in each header comment are those of the real ViT-B/16 (meta device)."""
    adapter_cfg = load(path).model.backbone.adapter
    claimed = claimed_counts(path)
    if adapter_cfg is None:
        assert claimed is None and 'no trainable CLIP parameter' in open(
            osp.join(ROOT, path)).read()
        return
    kwargs = dict(adapter_cfg)
    kind = kwargs.pop('type', 'HCLIPAdapter')
    if kind == 'HCLIPAdapter':
        from mmseg_hclip.peft import HCLIPAdapter as cls
    else:
        cls = MODELS.get(kind)
    counts = cls(meta_vitb16, freeze_clip=False, **kwargs).parameter_counts()['total']
    assert claimed is not None, f'{path} states no parameter count'
    assert claimed[0] == counts['trainable']
    if len(claimed) > 1:
        assert claimed[1] == counts['effective']


# ------------------------------------------------------------------ documentation
def test_readme_lists_every_config():
    readme = open(osp.join(ROOT, 'configs', 'README.md')).read()
    project_readme = open(osp.join(ROOT, 'projects', 'peft_baselines', 'README.md')).read()
    missing = [p for p in ALL_CONFIGS if not p.startswith(('configs/_base_/', PROJECT))
               and osp.basename(p) not in readme]
    missing += [p for p in ALL_CONFIGS if p.startswith(PROJECT) and
                osp.basename(p).split('_vitb16_')[0] not in project_readme]
    assert not missing, f'not in the READMEs: {missing}'
