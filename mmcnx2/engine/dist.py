# Copyright (c) mmcnx2 contributors. All rights reserved.
import torch
import torch.distributed as dist
from mmengine.config import Config


def setup_cpu_distributed(cfg: Config) -> None:
    """Let a launched (torchrun) run work on machines without CUDA.

    mmengine 0.10.7 assumes CUDA for ``launcher='pytorch'``: its ``init_dist`` calls
    ``torch.cuda.set_device`` and its DDP wrapper passes ``device_ids=[LOCAL_RANK]``, which
    DDP refuses for CPU modules. So on CPU we start the gloo process group ourselves (the
    Runner then skips its own start-up) and wrap the model without device ids.
    """
    if cfg.launcher == 'none' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        dist.init_process_group('gloo')  # env:// rendezvous set up by torchrun
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
