# Copyright (c) mmcnx2 contributors. All rights reserved.
from .exact_resume import ExactResumeHook
from .finite_loss import FiniteLossHook, NonFiniteLossError

__all__ = ['ExactResumeHook', 'FiniteLossHook', 'NonFiniteLossError']
