# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Registration of mmcnx2 modules in the OpenMMLab registries that exist here.

Models live in mmpretrain's registry; backbones are also added to mmdet's and mmseg's so a
config in those scopes can say ``type='ConvNeXtV2'``. mmdet and mmseg are optional.
"""
import importlib

from mmpretrain.registry import MODELS

DOWNSTREAM_REGISTRIES = ('mmdet.registry', 'mmseg.registry')


def register_model(cls):
    """Class decorator: register ``cls`` in mmpretrain's MODELS and, where installed, in
    mmdet's and mmseg's."""
    MODELS.register_module(module=cls)
    for name in DOWNSTREAM_REGISTRIES:
        try:
            registry = importlib.import_module(name)
        except ImportError:
            continue
        registry.MODELS.register_module(module=cls)
    return cls
