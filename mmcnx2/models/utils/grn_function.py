# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Fused (GELU +) Global Response Normalization with a hand-written backward.

The straightforward GRN, ``gamma * (x * Nx) + beta + x``, makes eager PyTorch allocate and
write four (N, L, 4C) tensors forward and about six backward, and autograd keeps two extra
copies of the activation. Written as ``out = x * scale + beta`` with the per-(sample, channel)
``scale = 1 + gamma * Nx``, forward is one fp32 reduction plus one fused multiply-add, and
backward needs only ``x`` and a few (N, C) statistics:

    dL/dscale = sum_L(dout * x)                     (N, C)
    dL/dG     = from dL/dscale through Nx = G / (mean_C(G) + eps)
    dL/dx     = dout * scale + x * (dL/dG / G)      (one new tensor, then in-place updates)

With ``gelu_input`` the preceding GELU is fused too: its backward writes into the same buffer.

On CPU a new tensor of this size costs more in page faults than the arithmetic done in it
(glibc maps every allocation over 32 MB afresh), so reductions of products run per sample,
whose temporaries fit glibc's reused heap, and backward allocates a single activation-sized
tensor. Plain PyTorch ops only: the same code runs on CPU and CUDA, eager and compiled (no
Triton kernel: one that cannot be tested on the machines this project is tested on would be a
liability).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch.autograd import Function


def _channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_L(a * b)`` in fp32 for (N, L, C) inputs; returns (N, 1, C)."""
    if a.device.type == 'cpu':
        # Per sample, see the module docstring.
        return torch.stack([
            torch.linalg.vecdot(x.float(), y.float(), dim=0) for x, y in zip(a, b)
        ]).unsqueeze(1)
    return torch.linalg.vecdot(a, b, dim=1).float().unsqueeze(1)


class _GRNFunction(Function):
    """GRN (of GELU(x) with ``gelu_input``) on x of shape (N, L, C), statistics over L."""

    @staticmethod
    def forward(ctx, x, gamma, beta, eps, gelu_input, recompute_gelu):
        act = F.gelu(x) if gelu_input else x
        # Statistics in fp32: a sum of squares over L loses precision in half types.
        gx = _channel_dot(act, act).sqrt()  # (N, 1, C)
        denom = gx.mean(dim=-1, keepdim=True) + eps  # (N, 1, 1)
        nx = gx / denom
        scale = 1 + gamma.float() * nx
        out = torch.addcmul(beta.to(act.dtype), act, scale.to(act.dtype))
        ctx.gelu_input, ctx.recompute_gelu = gelu_input, gelu_input and recompute_gelu
        # Keeping GELU's output costs one activation of memory, recomputing it one GELU.
        saved_act = None if ctx.recompute_gelu else act
        ctx.save_for_backward(x, saved_act, gx, denom, nx, scale, gamma)
        return out

    @staticmethod
    def backward(ctx, dout):
        x, act, gx, denom, nx, scale, gamma = ctx.saved_tensors
        if ctx.recompute_gelu:
            act = F.gelu(x)
        dout = dout.to(act.dtype)
        d_scale = _channel_dot(dout, act)  # (N, 1, C)
        d_beta = dout.sum(dim=(0, 1), dtype=torch.float32)
        d_gamma = (d_scale * nx).sum(dim=(0, 1))
        # Nx = G / denom with denom = mean_C(G) + eps.
        d_nx = d_scale * gamma.float()
        d_gx = (d_nx - (d_nx * nx).mean(dim=-1, keepdim=True)) / denom
        # d||x|| / dx = x / ||x||; zero where the norm is zero, as torch's vector_norm does.
        coef = torch.where(gx > 0, d_gx / gx, torch.zeros_like(gx))
        dx = dout * scale.to(act.dtype)
        dx.addcmul_(act, coef.to(act.dtype))
        if ctx.gelu_input:
            torch.ops.aten.gelu_backward.grad_input(dx, x, grad_input=dx)
        return dx, d_gamma.to(gamma.dtype), d_beta.to(gamma.dtype), None, None, None


def grn(x: torch.Tensor,
        gamma: torch.Tensor,
        beta: torch.Tensor,
        eps: float = 1e-6,
        gelu_input: bool = False,
        recompute_gelu: Optional[bool] = None) -> torch.Tensor:
    """Fused GRN over the spatial dims of a channels-last tensor.

    Same numbers as :class:`~mmcnx2.models.utils.GRN` (``G = ||x||_2`` over every dim but the
    first and last, ``Nx = G / (mean_C(G) + eps)``, ``gamma * (x * Nx) + beta + x``).

    Args:
        x (Tensor): (N, ..., C), e.g. (N, H, W, C) or (N, L, C).
        gamma (Tensor): (C,).
        beta (Tensor): (C,).
        eps (float): Added to the channel mean of G.
        gelu_input (bool): ``x`` is a pre-activation: compute ``GRN(GELU(x))``.
        recompute_gelu (bool, optional): With ``gelu_input``, recompute ``GELU(x)`` in backward
            instead of keeping it: one activation less memory for one more GELU. Defaults to
            True on CUDA (memory-bound, where it is nearly free) and False on CPU.

    Returns:
        Tensor: same shape and dtype as ``x``.
    """
    if recompute_gelu is None:
        recompute_gelu = x.is_cuda
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    out = _GRNFunction.apply(flat, gamma, beta, eps, gelu_input, recompute_gelu)
    return out.view(x.shape)
