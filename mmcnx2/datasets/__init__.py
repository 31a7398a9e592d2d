# Copyright (c) mmcnx2 contributors. All rights reserved.
from importlib import import_module
from importlib.util import find_spec

from mmpretrain.registry import DATASETS as MMPRETRAIN_DATASETS

from ..registry import register_on_first_use
from .named_errors import NamedSampleErrors, NamingCompose, SampleLoadError
from .synthetic import CLASSES, PALETTE, make_synthetic_world
from .unlabeled import ImageFolderUnlabeled

__all__ = [
    'CLASSES', 'PALETTE', 'ImageFolderUnlabeled', 'NamedSampleErrors', 'NamingCompose',
    'SampleLoadError', 'make_synthetic_world'
]

# Modules that import a codebase's datasets package (seconds) are imported, and their
# classes registered, when that codebase's dataset registry is first searched, or when one
# of their names is read from this package.
_LAZY = {'checked_cls': ('CheckedCustomDataset', 'CheckedImageNet')}
register_on_first_use(MMPRETRAIN_DATASETS, f'{__name__}.checked_cls')

if find_spec('mmdet') is not None:  # mmdet is optional; register only where it exists
    from mmdet.registry import DATASETS as MMDET_DATASETS
    register_on_first_use(MMDET_DATASETS, f'{__name__}.checked_coco')
    _LAZY['checked_coco'] = ('CheckedCocoDataset', 'CocoAnnotationError')

if find_spec('mmseg') is not None:  # mmseg is optional too
    from mmseg.registry import DATASETS as MMSEG_DATASETS

    from .seg_checks import CheckSegMap
    register_on_first_use(MMSEG_DATASETS, f'{__name__}.checked_seg')
    _LAZY['checked_seg'] = ('CheckedADE20KDataset', 'CheckedBaseSegDataset')
    __all__ += ['CheckSegMap']

__all__ += [name for names in _LAZY.values() for name in names]


def __getattr__(name):
    for module, names in _LAZY.items():
        if name in names:
            return getattr(import_module(f'{__name__}.{module}'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
