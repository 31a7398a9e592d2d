# Copyright (c) mmcnx2 contributors. All rights reserved.
from importlib.util import find_spec

from .synthetic import CLASSES, PALETTE, make_synthetic_world

__all__ = ['CLASSES', 'PALETTE', 'make_synthetic_world']

if find_spec('mmdet') is not None:  # mmdet is optional; register only where it exists
    from .checked_coco import CheckedCocoDataset, CocoAnnotationError
    __all__ += ['CheckedCocoDataset', 'CocoAnnotationError']

if find_spec('mmseg') is not None:  # mmseg is optional too
    from .seg_checks import CheckSegMap
    __all__ += ['CheckSegMap']
