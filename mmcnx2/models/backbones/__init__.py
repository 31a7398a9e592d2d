# Copyright (c) mmcnx2 contributors. All rights reserved.
from .convnext_v2 import ConvNeXtV2, ConvNeXtV2Block

__all__ = ['ConvNeXtV2', 'ConvNeXtV2Block']
