# H-CLIP, CLIP ViT-B/16, trained on COCO-Stuff-171: the paper's recipe (H-CLIP §5).
#   POF (q = 128, text tower orthogonal, input side for q/k/v/out) + DCRC (2-layer MLPs, Eq. 17)
#   Adam, CLIP lr 5e-6 (the base lr: the adapter's parameters), decode head lr 2e-4
#   (lr_mult 40 from schedule_80k_adam.py; the paper gives no head lr: this is the authors'
#   released value), weight decay 1e-4, PolyLR, 80k iterations, 1 image/GPU x 4 GPUs,
#   384x384 crops, CAT-Seg reference head, reference inference (640x640, 384 windows + global).
#   Validates on COCO-Stuff-171 val; the open-vocabulary benchmarks are
#   configs/hclip_vitb16_{ade847,pc459,ade150,pc59,voc20,voc20b}.py.
#
#   bash tools/dist_train.sh configs/hclip_vitb16_coco-stuff.py 4
#   (offline: --cfg-options model.backbone.pretrained=/path/to/ViT-B-16.pt)
#
_base_ = [
    './_base_/models/hclip_vitb16.py', './_base_/datasets/coco_stuff171.py',
    './_base_/schedules/schedule_80k_adam.py', './_base_/default_runtime.py'
]

# the learning rates above are for 4 GPUs x 1 image; `tools/train.py` does not rescale them
auto_scale_lr = dict(enable=False, base_batch_size=4)
