"""Process set-up shared by ``tools/train.py`` and ``tools/test.py``."""
import os

import torch
import torch.distributed as dist

from .checkpoint import register_safe_checkpoint_globals

__all__ = ['setup_runtime']


def setup_runtime(cfg) -> None:
    """Prepare the process before ``Runner.from_cfg(cfg)``.

    * Allow-lists the types of mmengine/MMSeg checkpoints so that loading and
      ``--resume`` work with torch's ``weights_only`` safe loading.
    * On a machine without CUDA, a distributed launch (``--launcher pytorch``)
      uses the gloo backend: the process group is created here, from the
      variables torchrun sets, because mmengine's initialiser selects a CUDA
      device unconditionally (the runner then finds the group initialised),
      and DDP wraps the model without ``device_ids`` (CPU modules).

    Args:
        cfg (mmengine.Config): The full config; ``cfg.launcher`` and
            ``cfg.env_cfg.dist_cfg`` are read and may be updated.
    """
    register_safe_checkpoint_globals()
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise RuntimeError(
            f'--launcher {launcher} needs GPUs, and none is visible. On a CPU-only '
            'machine use --launcher pytorch (tools/dist_train.sh) with the gloo backend.')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    if not dist.is_initialized():
        missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
                   if k not in os.environ]
        if missing:
            raise RuntimeError(
                f'--launcher pytorch expects torchrun environment variables; missing '
                f'{missing}. Start it with tools/dist_train.sh CONFIG NPROC.')
        dist.init_process_group(backend='gloo')
