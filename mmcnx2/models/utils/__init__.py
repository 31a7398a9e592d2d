# Copyright (c) mmcnx2 contributors. All rights reserved.
from . import fast_block
from .checkpoint import load_pretrained_backbone
from .grn import GRN
from .init import init_convnext_weights
from .mask import expand_patch_mask
from .norm import LayerNorm2d

__all__ = [
    'fast_block', 'GRN', 'LayerNorm2d', 'expand_patch_mask', 'init_convnext_weights',
    'load_pretrained_backbone'
]
