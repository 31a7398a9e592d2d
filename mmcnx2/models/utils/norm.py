# Copyright (c) mmcnx2 contributors. All rights reserved.
import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an (N, C, H, W) tensor.

    Unlike mmpretrain's ``LN2d`` it keeps the input's memory format (no ``.contiguous()``),
    so a channels_last network never copies activations around its norms.

    Args:
        num_channels (int): C.
        **kwargs: ``eps``, ``elementwise_affine`` of :class:`torch.nn.LayerNorm`.
    """

    def __init__(self, num_channels: int, **kwargs):
        super().__init__(num_channels, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
