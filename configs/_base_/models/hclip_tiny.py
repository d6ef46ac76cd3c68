# A tiny H-CLIP with an inline, randomly initialised CLIP (no download): for tests, CI
# and the quickstart. Same structure as hclip_vitb16.py at toy size: image 96x96, patch 16
# (6x6 tokens), 3 image blocks (guidance from blocks 0 and 1), 2 text blocks, widths 64,
# joint width 32, block size q=16, a 32-channel head padding to 16 classes.
crop_size = (96, 96)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[122.7709383, 116.7460125, 104.09373615],
    std=[68.5005327, 66.6321579, 70.32316305],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
tiny_clip = dict(
    embed_dim=32,
    vision_cfg=dict(image_size=96, layers=3, width=64, head_width=32, patch_size=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=64, heads=2, layers=2))
model = dict(
    type='HCLIPSegmentor',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='HCLIPBackbone',
        arch=tiny_clip,
        pretrained=None,
        img_size=96,
        guidance_layers=(0, 1),
        adapter=dict(
            type='HCLIPAdapter',
            block_size=16,
            orthogonal='text',
            sides='input',
            dcrc='mlp',
            train='blocks+dcrc',
            targets=('q', 'k', 'v', 'out'))),
    neck=dict(type='HCLIPTextNeck', templates='single', synonyms='first'),
    decode_head=dict(
        type='HCLIPCostAggHead',
        in_channels=32,
        guidance_channels=64,
        feature_size=(6, 6),
        prompt_channels=1,
        channels=32,
        num_layers=1,
        num_heads=2,
        window_size=3,
        pool_size=2,
        test_pool_size=1,
        appearance_guidance_channels=16,
        text_guidance_channels=16,
        cost_embed_kernel_size=3,
        decoder_channels=(16, 8),
        decoder_guidance_channels=(16, 8),
        decoder_guidance_proj_channels=(8, 4),
        pad_len=16,
        num_classes=171,  # nominal; the classes follow the vocabulary at run time
        ignore_index=255,
        loss_decode=dict(type='OneHotBCELoss', loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='reference', resize_to=(160, 160), crop_size=(96, 96), stride=(64, 64)))
custom_hooks = [
    # freed CPU memory is reused instead of unmapped and page-faulted in again (glibc; same
    # numbers, the head's CPU training step 0.6-0.7x the time; mmseg_hclip/utils/cpu_allocator.py)
    dict(type='CPUAllocatorHook'),
    dict(type='VocabularyHook'),  # the vocabulary follows the running dataset
    dict(type='HypersphericalEnergyHook', interval=300),  # relative HE drift of text targets
    # every checkpoint records the adapter / prompt / head settings its weights mean something
    # under; tools/test.py, demo.py, init_model and --resume refuse other settings
    dict(type='ModelSettingsHook'),
]
