# Copyright (c) mmcnx2 contributors. All rights reserved.
from .optimizers import LayerDecayOptimWrapperConstructor

__all__ = ['LayerDecayOptimWrapperConstructor']
