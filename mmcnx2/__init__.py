# Copyright (c) mmcnx2 contributors. All rights reserved.
"""mmcnx2: ConvNeXt V2 and FCMAE for OpenMMLab. Importing it registers every module; those
that import a codebase's models or datasets (seconds) when their registry is first searched."""
from importlib import import_module

from . import datasets, engine, visualization  # noqa: F401  (registration side effects)
from .apis import get_model, list_models
from .registry import register_in_codebases_on_first_use
from .version import __version__

# mmcnx2.models imports mmpretrain.models, which imports mmdet.models and mmdet.datasets
# (~10 s on 2 cores): imported when a model registry is first searched, or when imported.
register_in_codebases_on_first_use('MODELS', f'{__name__}.models')

__all__ = ['__version__', 'get_model', 'list_models']


def __getattr__(name):  # `mmcnx2.models` before anything imported it
    if name == 'models':
        return import_module(f'{__name__}.models')
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
