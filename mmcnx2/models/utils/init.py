# Copyright (c) mmcnx2 contributors. All rights reserved.
import torch.nn as nn
from mmengine.model.weight_init import constant_init, trunc_normal_init


def init_convnext_weights(module: nn.Module) -> None:
    """ConvNeXt V2's init for every submodule: trunc_normal(std 0.02) conv and linear weights,
    zero biases, unit LayerNorms (GRN parameters start at zero by construction)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_init(m, std=.02, bias=0.)
        elif isinstance(m, nn.LayerNorm):
            constant_init(m, val=1., bias=0.)
