# H-CLIP on CLIP ViT-B/16: reference hyper-parameters (paper + CAT-Seg decoder).
# Input 384x384 (positional embedding resized bicubically from 224), guidance from image
# blocks 3 and 7 (0-based, after the block), one prompt template, 171 training classes.
#
# Weights: `pretrained='openai'` downloads OpenAI's ViT-B/16 through open_clip. Offline, pass
# a local file:  --cfg-options model.backbone.pretrained=/path/to/ViT-B-16.pt
# (OpenAI weights need QuickGELU: keep quick_gelu=True).
#
# Images are normalised here with CLIP's RGB statistics (x255):
#   mean (122.77, 116.75, 104.09), std (68.50, 66.63, 70.32).
# Vocabulary: VocabularyHook sets the classes from the running dataloader's dataset
# (train classes for training, the benchmark's classes for val/test).
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[122.7709383, 116.7460125, 104.09373615],
    std=[68.5005327, 66.6321579, 70.32316305],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,  # = the training ignore index (COCO-Stuff-171)
    size=(384, 384))  # the training crop size (crops come from the dataset config)
model = dict(
    type='HCLIPSegmentor',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='HCLIPBackbone',
        arch='ViT-B-16',
        pretrained='openai',
        quick_gelu=True,
        img_size=384,
        guidance_layers=(3, 7),
        # POF (text tower orthogonal, q=128, input side for q/k/v/out) + DCRC (paper, Eq. 17)
        adapter=dict(
            type='HCLIPAdapter',
            block_size=128,
            orthogonal='text',
            sides='input',
            dcrc='mlp',
            train='blocks+dcrc',
            targets=('q', 'k', 'v', 'out')),
        with_cp=False),
    neck=dict(type='HCLIPTextNeck', templates='single', synonyms='first'),
    decode_head=dict(
        type='HCLIPCostAggHead',
        in_channels=512,
        guidance_channels=768,
        feature_size=(24, 24),
        prompt_channels=1,
        channels=128,
        num_layers=2,
        num_heads=4,
        window_size=12,
        pool_size=2,
        test_pool_size=1,
        decoder_channels=(64, 32),
        decoder_guidance_channels=(256, 128),
        decoder_guidance_proj_channels=(32, 16),
        pad_len=256,
        num_classes=171,
        ignore_index=255,
        ignore_as_negative=True,
        loss_decode=dict(type='OneHotBCELoss', loss_weight=1.0)),
    train_cfg=dict(),
    # the authors' protocol: resize to 640x640, 4 windows of 384 (stride 256) + a global view
    test_cfg=dict(mode='reference', resize_to=(640, 640), crop_size=(384, 384),
                  stride=(256, 256)))
custom_hooks = [
    # freed CPU memory is reused instead of unmapped and page-faulted in again (glibc; same
    # numbers, the head's CPU training step 0.6-0.7x the time; mmseg_hclip/utils/cpu_allocator.py)
    dict(type='CPUAllocatorHook'),
    dict(type='VocabularyHook'),  # the vocabulary follows the running dataset
    dict(type='HypersphericalEnergyHook', interval=1000),  # relative HE drift of text targets
    # every checkpoint records the adapter / prompt / head settings its weights mean something
    # under; tools/test.py, demo.py, init_model and --resume refuse other settings
    dict(type='ModelSettingsHook'),
]
