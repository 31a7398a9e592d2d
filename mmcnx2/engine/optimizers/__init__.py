# Copyright (c) mmcnx2 contributors. All rights reserved.
from .layer_decay import LayerDecayOptimWrapperConstructor

__all__ = ['LayerDecayOptimWrapperConstructor']
