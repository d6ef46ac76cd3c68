"""Convert a released CAT-Seg checkpoint (detectron2 ``model_final.pth``) to this project.

CAT-Seg (Cho et al., CVPR 2024) fine-tunes the q and v projections of CLIP's attention and
trains the cost aggregator; its checkpoints hold CLIP under
``sem_seg_head.predictor.clip_model.*`` (q/k/v split), the aggregator under
``sem_seg_head.predictor.transformer.*`` and the guidance upsamplers ``upsample1/2``. The
result loads strictly into ``configs/catseg/catseg_vit{b16,l14}_<benchmark>.py`` (no adapter,
CAT-Seg's tuned CLIP weights), so the official CAT-Seg weights are evaluated with our data
and metrics::

    python tools/model_converters/catseg2mmseg.py model_base.pth work_dirs/catseg_vitb16.pth
    bash tools/dist_test.sh configs/catseg/catseg_vitb16_ade150.py work_dirs/catseg_vitb16.pth 4

Every source key is mapped exactly once; unknown or missing keys are an error listing them,
and the converted state dict must load strictly into the model of ``--config`` (by default
the ViT-B/16 or ViT-L/14 CAT-Seg config, chosen from the CLIP width in the file).
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))

from _key_mapping import (ConversionError, KeyMapper, clip_width,  # noqa: E402
                     consume_pixel_stats, finish_and_save, map_catseg_head, map_clip,
                     read_source, run_cli)

#: default target config per CLIP image width (the weights are the same for every benchmark)
DEFAULT_CONFIGS = {
    768: 'configs/catseg/catseg_vitb16_ade150.py',
    1024: 'configs/catseg/catseg_vitl14_ade150.py',
}


def convert(src: str, out: str, config: str = None) -> dict:
    """Convert ``src`` to ``out``; return ``dict(config=..., num_keys=...)``.

    Raises:
        ConversionError: Unknown / missing source keys, or a layout that does not fit.
        CheckpointMismatchError: The converted weights do not fit ``config``'s model.
    """
    from mmengine.config import Config
    source = read_source(src)
    mapper = KeyMapper(source, src)
    width = clip_width(mapper)
    if config is None:
        if width not in DEFAULT_CONFIGS:
            raise ConversionError(f'{src}: CLIP image width {width} is neither ViT-B/16 (768) '
                                  'nor ViT-L/14 (1024); pass --config')
        config = osp.join(ROOT, DEFAULT_CONFIGS[width])
    cfg = Config.fromfile(config)
    if (cfg.model.backbone.get('adapter') or None) is not None:
        raise ConversionError(f'{config} has an adapter; CAT-Seg checkpoints hold tuned CLIP '
                              'weights and no adapter: use a configs/catseg/ config')
    map_clip(mapper)
    masks = map_catseg_head(mapper)
    consume_pixel_stats(mapper, cfg)
    return finish_and_save(mapper, masks, config, src, out, converted_from='CAT-Seg (detectron2)',
                           converter='tools/model_converters/catseg2mmseg.py')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert a CAT-Seg detectron2 checkpoint (model_final.pth / model_base.pth '
        '/ model_large.pth) to an MMSeg checkpoint of configs/catseg/')
    parser.add_argument('src', help='CAT-Seg checkpoint')
    parser.add_argument('out', help='converted checkpoint to write (.pth)')
    parser.add_argument(
        '--config', default=None,
        help='target config (default: configs/catseg/catseg_vitb16_ade150.py or '
        'catseg_vitl14_ade150.py from the CLIP width; every benchmark config of the same '
        'model takes the same weights)')
    return parser.parse_args(argv)


def main(argv=None):
    run_cli(convert, parse_args(argv))


if __name__ == '__main__':
    main()
