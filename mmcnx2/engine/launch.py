# Copyright (c) mmcnx2 contributors. All rights reserved.
"""The parts of a distributed launch that mmengine 0.10.7 only does with CUDA.

mmengine's ``slurm`` launcher and its ``DDPStrategy`` / ``FSDPStrategy`` assume a GPU per
process (``torch.cuda.set_device``, ``device_ids=[LOCAL_RANK]``). On a machine without one the
tools create the gloo process group themselves; these helpers supply what that needs.
"""
import os
import subprocess
from typing import MutableMapping

from mmengine.config import Config

#: What ``srun`` sets for every task and mmengine's slurm launcher reads.
SLURM_KEYS = ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST')


def export_slurm_env(environ: MutableMapping[str, str] = os.environ) -> None:
    """Set torch's ``env://`` variables from ``srun``'s, as mmengine's slurm launcher does.

    ``RANK`` = ``SLURM_PROCID``, ``WORLD_SIZE`` = ``SLURM_NTASKS``, ``LOCAL_RANK`` =
    ``SLURM_LOCALID``; ``MASTER_ADDR`` (unless set) is the first host of ``SLURM_NODELIST``
    (``scontrol show hostname``) and ``MASTER_PORT`` (unless set) 29500, mmengine's defaults
    (``tools/slurm_run.sh`` sets ``MASTER_PORT`` from ``PORT``). Then
    ``torch.distributed.init_process_group('gloo')`` joins the job.

    Raises:
        KeyError: naming the ``SLURM_*`` variables that are missing (not run by ``srun``).
    """
    missing = [key for key in SLURM_KEYS if key not in environ]
    if missing:
        raise KeyError(f'--launcher slurm needs the variables srun sets for each task; '
                       f'missing: {", ".join(missing)}. Start the job with '
                       'tools/slurm_train.sh / slurm_test.sh (srun), or use --launcher pytorch '
                       'with tools/dist_train.sh.')
    if 'MASTER_ADDR' not in environ:
        hosts = subprocess.run(['scontrol', 'show', 'hostname', environ['SLURM_NODELIST']],
                               capture_output=True, text=True, check=True).stdout.split()
        environ['MASTER_ADDR'] = hosts[0]
    environ.setdefault('MASTER_PORT', '29500')
    environ['RANK'] = environ['SLURM_PROCID']
    environ['WORLD_SIZE'] = environ['SLURM_NTASKS']
    environ['LOCAL_RANK'] = environ.get('SLURM_LOCALID', '0')


def prepare_cpu_strategy(cfg: Config) -> None:
    """Point a ``FlexibleRunner`` config's strategy at the CPU.

    ``DDPStrategy`` wraps the model with ``device_ids=[LOCAL_RANK]`` (a CUDA device) and
    ``FSDPStrategy`` with ``device_id=LOCAL_RANK``; a CPU model needs ``device_ids=None`` and
    ``device_id='cpu'`` (FSDP accepts a CPU device with gloo; tested with torch 2.14). Values
    the config sets itself are kept.
    """
    strategy = cfg.get('strategy')
    if cfg.get('runner_type') != 'FlexibleRunner' or not strategy:
        return
    if strategy.get('type') == 'FSDPStrategy':
        wrapper = strategy.get('model_wrapper') or dict(type='MMFullyShardedDataParallel')
        wrapper.setdefault('device_id', 'cpu')
    elif strategy.get('type') == 'DDPStrategy':
        # mmengine's own default wrapper, plus the CPU device.
        wrapper = strategy.get('model_wrapper') or dict(
            type='MMDistributedDataParallel', broadcast_buffers=False)
        wrapper.setdefault('device_ids', None)
    else:
        return
    strategy['model_wrapper'] = wrapper
