# Copyright (c) mmcnx2 contributors. All rights reserved.
from typing import Optional

import torch
import torch.nn as nn

from .grn_function import grn


class GRN(nn.Module):
    """Global Response Normalization on channels-last activations.

    ``G = ||x||_2`` over (H, W) per sample and channel, ``Nx = G / (mean_C(G) + eps)``,
    ``out = gamma * (x * Nx) + beta + x``. gamma and beta are 1-D so the usual "1-D params get
    no weight decay" rules apply to them. Computed by the fused :func:`grn` (statistics in fp32,
    one pass over ``x`` forward, hand-written backward).

    Args:
        channels (int): Number of channels C.
        eps (float): Added to the channel mean of G. Defaults to 1e-6.

    Shapes:
        x: (N, H, W, C) or (N, L, C). visible: None or (N, H, W, 1) with 1 at kept sites and 0
        at removed ones; removed sites are zeroed and excluded from the statistics (FCMAE's
        sparse encoder). returns: same as x.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self,
                x: torch.Tensor,
                visible: Optional[torch.Tensor] = None,
                gelu_input: bool = False) -> torch.Tensor:
        """GRN of ``x``, or of ``GELU(x)`` with ``gelu_input`` (fused, see :func:`grn`)."""
        if visible is not None:
            x = x * visible  # GELU(0) = 0: masking before a fused GELU is the same
        return grn(x, self.gamma, self.beta, self.eps, gelu_input)
