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


def register_on_first_use(registry, module: str) -> None:
    """Import ``module`` (which registers classes in ``registry``) when ``registry`` is first
    searched instead of now: for modules that are slow to import.

    mmengine imports a registry's ``locations`` on its first look-up (mmdet's ``DATASETS``
    imports ``mmdet.datasets`` then, whatever the launcher), and ``module`` joins them. Uses
    ``Registry._locations`` / ``_imported`` of mmengine 0.10 (pinned).
    """
    if registry._imported:  # looked up already: nothing left to wait for
        importlib.import_module(module)
    elif module not in registry._locations:
        # a new list: registries without locations share mmengine's default one
        registry._locations = [*registry._locations, module]


def register_in_codebases_on_first_use(registry_name: str, module: str,
                                       root: bool = False) -> None:
    """:func:`register_on_first_use` for the registry ``registry_name`` (e.g. ``'MODELS'``)
    of mmpretrain, mmdet and mmseg (those installed), and with ``root`` of mmengine's root
    registry too: for classes registered there, which configs look up from any scope."""
    names = ['mmengine.registry'] * root + ['mmpretrain.registry', *DOWNSTREAM_REGISTRIES]
    for name in names:
        try:
            registries = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(registries, registry_name):  # mmpretrain, mmdet, mmseg have no FUNCTIONS
            register_on_first_use(getattr(registries, registry_name), module)
