# Copyright (c) mmcnx2 contributors. All rights reserved.
from typing import List

import torch
import torch.nn as nn

GRN_STATS = ('sample', 'batch')


def grn_reduce_dims(ndim: int, stats: str) -> List[int]:
    """Dims of a channels-last (N, ..., C) tensor that GRN's norm reduces over: every dim but
    the channels, and but the samples with ``stats='sample'``."""
    return list(range(1 if stats == 'sample' else 0, ndim - 1))


class GRN(nn.Module):
    """Global Response Normalization on channels-last activations, as the formula.

    ``G = ||x||_2`` per channel over the sites of a sample (``stats='sample'``, the paper and
    the dense official GRN) or over the sites of all samples of the batch (``stats='batch'``,
    the official sparse encoder's ``MinkowskiGRN``), ``Nx = G / (mean_C(G) + eps)``,
    ``out = gamma * (x * Nx) + beta + x``. The norm is reduced in fp32 whatever the input's
    dtype: a sum of squares over thousands of sites overflows fp16 (official ConvNeXt-V2 issue
    66) and loses precision in bf16. gamma and beta are 1-D, so the usual "1-D params get no
    weight decay" rules apply to them.

    Eager block calls run a fused implementation of this formula
    (:mod:`~mmcnx2.models.utils.fast_block`); this forward is what tracing, scripting, export
    and hooks on the GRN see.

    Args:
        channels (int): Number of channels C.
        eps (float): Added to the channel mean of G. Defaults to 1e-6.
        stats (str): ``'sample'`` or ``'batch'``, see above. Defaults to ``'sample'``.

    Shapes:
        x: (N, ..., C), e.g. (N, H, W, C). Sites to leave out of the statistics (FCMAE's removed
        patches) must be zero. returns: same as x.
    """

    def __init__(self, channels: int, eps: float = 1e-6, stats: str = 'sample'):
        super().__init__()
        if stats not in GRN_STATS:
            raise ValueError(f'GRN stats must be one of {GRN_STATS}, got {stats!r}')
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.stats = stats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(
            x.float(), 2, dim=grn_reduce_dims(x.dim(), self.stats), keepdim=True)
        nx = (gx / (gx.mean(dim=-1, keepdim=True) + self.eps)).to(x.dtype)
        return self.gamma * (x * nx) + self.beta + x

    def extra_repr(self) -> str:
        return f'{self.gamma.shape[0]}, eps={self.eps}, stats={self.stats!r}'
