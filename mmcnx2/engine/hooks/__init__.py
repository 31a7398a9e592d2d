# Copyright (c) mmcnx2 contributors. All rights reserved.
from .atomic_checkpoint import ATOMIC_BACKEND, AtomicCheckpointHook, atomic_write
from .exact_resume import ExactResumeHook
from .finite_loss import FiniteLossHook, NonFiniteLossError, NonFiniteWeightsError
from .rebind_pretrained import RebindPretrainedHook
from .strict_load import CheckpointMismatchError, StrictLoadHook
from .total_batch import TotalBatchHook, TotalBatchMismatchError

__all__ = [
    'ATOMIC_BACKEND', 'AtomicCheckpointHook', 'CheckpointMismatchError', 'ExactResumeHook',
    'FiniteLossHook', 'NonFiniteLossError', 'NonFiniteWeightsError', 'RebindPretrainedHook',
    'StrictLoadHook', 'TotalBatchHook', 'TotalBatchMismatchError', 'atomic_write'
]
