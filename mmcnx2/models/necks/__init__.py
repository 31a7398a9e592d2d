# Copyright (c) mmcnx2 contributors. All rights reserved.
from .fcmae_decoder import FCMAEDecoder

__all__ = ['FCMAEDecoder']
