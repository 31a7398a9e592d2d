# Copyright (c) mmcnx2 contributors. All rights reserved.
from importlib import import_module

from ...registry import register_in_codebases_on_first_use
from .amp_fallback import amp_or_fp32_optim_wrapper

__all__ = ['LayerDecayOptimWrapperConstructor', 'amp_or_fp32_optim_wrapper']

# layer_decay subclasses mmpretrain's constructor, so imports mmpretrain.models (and with it
# mmdet.models, ~10 s): imported, and registered in mmengine's root registry, when a
# constructor is first looked up, or when its name is read from this package.
register_in_codebases_on_first_use('OPTIM_WRAPPER_CONSTRUCTORS', f'{__name__}.layer_decay',
                                   root=True)


def __getattr__(name):
    if name == 'LayerDecayOptimWrapperConstructor':
        return import_module(f'{__name__}.layer_decay').LayerDecayOptimWrapperConstructor
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
