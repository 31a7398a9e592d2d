# Copyright (c) mmcnx2 contributors. All rights reserved.
from .fcmae_head import FCMAEHead

__all__ = ['FCMAEHead']
