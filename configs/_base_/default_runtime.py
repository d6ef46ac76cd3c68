# Runtime defaults shared by every mmseg_hclip config (MMSeg 1.x conventions).
# Importing mmseg_hclip registers its modules and, for checkpoints: torch's safe loading with an
# allow-list of the types mmengine checkpoints hold (mmseg_hclip/utils/checkpoint.py), and an
# atomic local file backend (temporary file + os.replace), so an interrupted save never leaves a
# torn file behind `last_checkpoint` (mmseg_hclip/engine/checkpoint_io.py). `tools/train.py
# --resume` onto an unreadable checkpoint names it and resumes from the newest readable one.
custom_imports = dict(imports=['mmseg_hclip'], allow_failed_imports=False)
default_scope = 'mmseg'
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),  # tools/train.py switches to gloo on CPU-only machines
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
tta_model = dict(type='SegTTAModel')
