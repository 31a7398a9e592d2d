# Copyright (c) mmcnx2 contributors. All rights reserved.
from .checkpoint import (SAFE_GLOBALS, UnsafeCheckpointError, load_local_checkpoint,
                         register_safe_globals)
from .config import load_cfg, parse_run_args, rebind_pretrained
from .hooks import ExactResumeHook, FiniteLossHook, NonFiniteLossError
from .optimizers import LayerDecayOptimWrapperConstructor

# torch>=2.6 loads with weights_only=True; allow what mmengine checkpoints hold.
register_safe_globals()

__all__ = [
    'ExactResumeHook', 'FiniteLossHook', 'LayerDecayOptimWrapperConstructor',
    'NonFiniteLossError', 'SAFE_GLOBALS', 'UnsafeCheckpointError', 'load_cfg',
    'load_local_checkpoint', 'parse_run_args', 'rebind_pretrained', 'register_safe_globals'
]
