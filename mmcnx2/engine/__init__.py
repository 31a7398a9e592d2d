# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Training-time pieces. Importing this package registers hooks, an optim wrapper, the
layer-decay and FSDP constructors (on first look-up) and an atomic file backend under new
names; it does not change mmengine's checkpoint loader (see
:func:`install_safe_checkpoint_loading`)."""
from ..registry import register_in_codebases_on_first_use
from . import optimizers  # noqa: F401  (registration; layer decay on first look-up)
from .cfg_options import NEW_KEY, CfgOptionsAction, ConfigOptionError, check_options
from .checkpoint import (SAFE_GLOBALS, CorruptCheckpointError, NoValidCheckpointError,
                         UnsafeCheckpointError, find_resume_checkpoint,
                         install_safe_checkpoint_loading, load_checkpoint_file,
                         load_local_checkpoint, nonfinite_tensors, training_checkpoint_problem)
from .config import (build_runner, load_cfg, load_cfg_or_exit, parse_run_args,
                     prepare_distributed, prepare_run, rebind_pretrained)
from .hooks import (AtomicCheckpointHook, CheckpointMismatchError, ExactResumeHook,
                    FiniteLossHook, NonFiniteLossError, NonFiniteWeightsError,
                    RebindPretrainedHook, StrictLoadHook, TotalBatchHook,
                    TotalBatchMismatchError, atomic_write)

# fsdp (FSDP wrap policy and constructor) imports the models: registered on first look-up.
for _registry in ('FUNCTIONS', 'OPTIM_WRAPPER_CONSTRUCTORS'):
    register_in_codebases_on_first_use(_registry, f'{__name__}.fsdp', root=True)

__all__ = [
    'AtomicCheckpointHook', 'CfgOptionsAction', 'CheckpointMismatchError', 'ConfigOptionError',
    'CorruptCheckpointError', 'ExactResumeHook', 'FiniteLossHook',
    'LayerDecayOptimWrapperConstructor', 'NEW_KEY', 'NoValidCheckpointError',
    'NonFiniteLossError', 'NonFiniteWeightsError', 'RebindPretrainedHook', 'SAFE_GLOBALS',
    'StrictLoadHook', 'TotalBatchHook', 'TotalBatchMismatchError', 'UnsafeCheckpointError',
    'atomic_write', 'build_runner', 'check_options',
    'find_resume_checkpoint', 'install_safe_checkpoint_loading', 'load_cfg', 'load_cfg_or_exit',
    'load_checkpoint_file', 'load_local_checkpoint', 'nonfinite_tensors', 'parse_run_args',
    'prepare_distributed', 'prepare_run', 'rebind_pretrained', 'training_checkpoint_problem'
]


def __getattr__(name):  # the layer-decay constructor is imported on first use
    if name == 'LayerDecayOptimWrapperConstructor':
        return optimizers.LayerDecayOptimWrapperConstructor
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
