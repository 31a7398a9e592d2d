# Copyright (c) mmcnx2 contributors. All rights reserved.
from .fcmae import FCMAE

__all__ = ['FCMAE']
