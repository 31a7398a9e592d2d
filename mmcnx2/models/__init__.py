# Copyright (c) mmcnx2 contributors. All rights reserved.
from . import heads, necks, selfsup  # noqa: F401  (registration side effects)
from .backbones import ConvNeXtV2

__all__ = ['ConvNeXtV2']
