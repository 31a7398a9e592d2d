# Copyright (c) mmcnx2 contributors. All rights reserved.
"""mmcnx2: ConvNeXt V2 and FCMAE for OpenMMLab. Importing it registers every module."""
from . import datasets, engine, models  # noqa: F401  (registration side effects)
from .version import __version__

__all__ = ['__version__']
