# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Fused (GELU +) Global Response Normalization (+ Linear) with a hand-written backward.

The straightforward GRN, ``gamma * (x * Nx) + beta + x``, makes eager PyTorch allocate and
write four (N, L, 4C) tensors forward and about six backward, and autograd keeps two extra
copies of the activation. Written as ``out = x * scale + beta`` with the per-(sample, channel)
``scale = 1 + gamma * Nx``, forward is one fp32 reduction plus one fused multiply-add, and
backward needs only ``x`` and a few (N, C) statistics:

    dL/dscale = sum_L(dout * x)                     (N, C)
    dL/dG     = from dL/dscale through Nx = G / (mean_C(G) + eps)
    dL/dx     = dout * scale + x * (dL/dG / G)      (computed in place in one buffer)

With ``gelu_input`` the preceding GELU is fused too: its backward writes into the same buffer.
With ``weight`` the following Linear (the block's second pointwise conv) is fused as well:
backward then owns the Linear's input gradient and turns it into dL/dx in place, gets
``dL/dbeta = dL/dbias @ weight`` from a (C,) vector instead of a pass over (N, L, 4C), and,
with ``recompute``, the GRN output the Linear needs is recomputed from ``x`` instead of kept,
so a block keeps a single (N, L, 4C) tensor for backward.

Buffers are reused in place. With ``conv1x1`` (eager CPU runs; the caller decides, see
:mod:`~mmcnx2.models.utils.fast_block`) the Linear runs as a 1x1 convolution, which oneDNN runs
faster than Linear's GEMM. Plain PyTorch ops only: the same code runs on CPU and CUDA, eager and
compiled (no Triton kernel: one that cannot be tested on the machines this project is tested on
would be a liability).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch.autograd import Function

from .grn import GRN_STATS


def _channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_L(a * b)`` for (N, L, C) inputs, summed in fp32; returns (N, 1, C) fp32.

    fp32 inputs: one fused reduction (no product tensor). Half precision: the products keep
    the input dtype (no fp32 copy of the inputs) and the sum over L is accumulated in fp32,
    where a half-precision sum would lose the small terms."""
    if a.dtype == torch.float32:
        return torch.linalg.vecdot(a, b, dim=1).unsqueeze(1)
    return (a * b).sum(1, keepdim=True, dtype=torch.float32)


def _channel_norm(a: torch.Tensor) -> torch.Tensor:
    """``||a||_2`` over L in fp32 for (N, L, C) a; returns (N, 1, C)."""
    # Accumulates and returns fp32 without an fp32 copy of a half-precision input.
    return torch.linalg.vector_norm(a, dim=1, keepdim=True, dtype=torch.float32)


def _as_conv_input(x: torch.Tensor) -> torch.Tensor:
    """(N, ..., C) channels-last data as an (N, C, L, 1) channels_last view, for 1x1 convs."""
    return x.reshape(x.shape[0], -1, 1, x.shape[-1]).permute(0, 3, 1, 2)


def pointwise_linear(x: torch.Tensor,
                     weight: torch.Tensor,
                     bias: Optional[torch.Tensor] = None,
                     conv1x1: bool = False) -> torch.Tensor:
    """``F.linear`` over the last dim of (N, ..., C) x; with ``conv1x1`` as a 1x1 convolution
    on the channels_last view."""
    if not conv1x1:
        return F.linear(x, weight, bias)
    out = F.conv2d(_as_conv_input(x), weight[:, :, None, None], bias)  # (N, C_out, L, 1)
    return out.permute(0, 2, 3, 1).reshape(*x.shape[:-1], weight.shape[0])


def _pointwise_linear_backward(dout: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                               need_weight_grad: bool, conv1x1: bool):
    """Input and weight gradients of ``pointwise_linear(x, weight, conv1x1=conv1x1)``."""
    if not conv1x1:
        dx = dout @ weight
        dw = dout.flatten(0, -2).t() @ x.flatten(0, -2) if need_weight_grad else None
        return dx, dw
    dx, dw, _ = torch.ops.aten.convolution_backward(
        _as_conv_input(dout), _as_conv_input(x), weight[:, :, None, None], bias_sizes=None,
        stride=[1, 1], padding=[0, 0], dilation=[1, 1], transposed=False,
        output_padding=[0, 0], groups=1, output_mask=[True, need_weight_grad, False])
    dx = dx.permute(0, 2, 3, 1).reshape(x.shape)
    return dx, None if dw is None else dw.flatten(1)


class _GRNFunction(Function):
    """GRN (of GELU(x) with ``gelu_input``, followed by ``x @ weight.T + bias`` with
    ``weight``) on x of shape (N, L, C), statistics over L."""

    @staticmethod
    def forward(ctx, x, gamma, beta, eps, gelu_input, weight, bias, recompute, conv1x1):
        act = F.gelu(x) if gelu_input else x
        # Statistics in fp32: a sum of squares over L overflows fp16 and loses precision in
        # bf16.
        gx = _channel_norm(act)  # (N, 1, C)
        denom = gx.mean(dim=-1, keepdim=True) + eps  # (N, 1, 1)
        nx = gx / denom
        scale = (1 + gamma.float() * nx).to(act.dtype)
        beta = beta.to(act.dtype)
        # GELU's output is a buffer of our own: with recompute nothing needs it afterwards.
        out = torch.addcmul(beta, act, scale, out=act if gelu_input and recompute else None)
        grn_out = out
        if weight is not None:
            weight = weight.to(act.dtype)
            out = pointwise_linear(out, weight, None if bias is None else bias.to(act.dtype),
                                   conv1x1)
        ctx.gelu_input, ctx.conv1x1 = gelu_input, conv1x1
        ctx.fused_linear, ctx.has_bias = weight is not None, bias is not None
        # With recompute, backward rebuilds GELU's and GRN's outputs from x: one more GELU
        # and multiply-add for one (fused: two) activation(s) less memory.
        saved_act = act if gelu_input and not recompute else None
        saved_grn_out = grn_out if weight is not None and not recompute else None
        ctx.save_for_backward(x, saved_act, saved_grn_out, gx, denom, nx, scale, gamma, beta,
                              weight)
        return out

    @staticmethod
    def backward(ctx, dout):
        x, act, grn_out, gx, denom, nx, scale, gamma, beta, weight = ctx.saved_tensors
        if act is None:
            act = F.gelu(x) if ctx.gelu_input else x
        dout = dout.to(act.dtype)
        d_weight = d_bias = None
        if ctx.fused_linear:
            if grn_out is None:
                grn_out = torch.addcmul(beta, act, scale)
            d_grn_out, d_weight = _pointwise_linear_backward(
                dout, grn_out, weight, ctx.needs_input_grad[5], ctx.conv1x1)
            del grn_out
            d_bias = dout.flatten(0, -2).sum(0, dtype=torch.float32)
            # Rows of d_grn_out are rows of dout times weight: their sum is d_bias @ weight.
            d_beta = d_bias @ weight.float()
            dout = d_grn_out
        else:
            d_beta = dout.sum(dim=(0, 1), dtype=torch.float32)
        d_scale = _channel_dot(dout, act)  # (N, 1, C)
        d_gamma = (d_scale * nx).sum(dim=(0, 1))
        # Nx = G / denom with denom = mean_C(G) + eps.
        d_nx = d_scale * gamma.float()
        d_gx = (d_nx - (d_nx * nx).mean(dim=-1, keepdim=True)) / denom
        # d||x|| / dx = x / ||x||; zero where the norm is zero, as torch's vector_norm does.
        coef = torch.where(gx > 0, d_gx / gx, torch.zeros_like(gx))
        # dout is the fused Linear's input gradient, a buffer of our own: reuse it.
        dx = dout.mul_(scale) if ctx.fused_linear else dout * scale
        dx.addcmul_(act, coef.to(act.dtype))
        if ctx.gelu_input:
            torch.ops.aten.gelu_backward.grad_input(dx, x, grad_input=dx)
        param_dtype = gamma.dtype
        if d_weight is not None:
            d_weight = d_weight.to(param_dtype)
        if not ctx.has_bias:
            d_bias = None
        elif d_bias is not None:
            d_bias = d_bias.to(param_dtype)
        return (dx, d_gamma.to(param_dtype), d_beta.to(param_dtype), None, None, d_weight,
                d_bias, None, None)


def grn(x: torch.Tensor,
        gamma: torch.Tensor,
        beta: torch.Tensor,
        eps: float = 1e-6,
        gelu_input: bool = False,
        weight: Optional[torch.Tensor] = None,
        bias: Optional[torch.Tensor] = None,
        recompute: Optional[bool] = None,
        stats: str = 'sample',
        conv1x1: bool = False) -> torch.Tensor:
    """Fused GRN over the spatial dims of a channels-last tensor.

    Same numbers as :class:`~mmcnx2.models.utils.GRN` (``G = ||x||_2`` per channel over the
    sites of a sample, or of the batch with ``stats='batch'``, ``Nx = G / (mean_C(G) + eps)``,
    ``gamma * (x * Nx) + beta + x``), then optionally a Linear over the channels.

    Args:
        x (Tensor): (N, ..., C), e.g. (N, H, W, C) or (N, L, C).
        gamma (Tensor): (C,).
        beta (Tensor): (C,).
        eps (float): Added to the channel mean of G.
        gelu_input (bool): ``x`` is a pre-activation: compute ``GRN(GELU(x))``.
        weight (Tensor, optional): (C_out, C): apply ``F.linear(GRN(..), weight, bias)``.
        bias (Tensor, optional): (C_out,), with ``weight``.
        recompute (bool, optional): Recompute GELU's (with ``gelu_input``) and GRN's (with
            ``weight``) outputs in backward instead of keeping them: less activation memory
            for one more GELU and multiply-add. Defaults to True on CUDA (memory-bound, where
            it is nearly free) and False on CPU.
        stats (str): ``'sample'`` or ``'batch'``, see :class:`~mmcnx2.models.utils.GRN`.
        conv1x1 (bool): Run the Linear as a 1x1 convolution (faster in eager CPU runs).
            Defaults to False.

    Returns:
        Tensor: (N, ..., C), or (N, ..., C_out) with ``weight``; the dtype of ``x``.
    """
    if recompute is None:
        recompute = x.is_cuda
    if bias is not None and weight is None:
        raise ValueError('grn: bias needs a weight')
    if stats not in GRN_STATS:
        raise ValueError(f'grn: stats must be one of {GRN_STATS}, got {stats!r}')
    # Batch statistics are the per-sample ones of the whole batch seen as one sample.
    groups = 1 if stats == 'batch' else x.shape[0]
    flat = x.reshape(groups, -1, x.shape[-1])
    out = _GRNFunction.apply(flat, gamma, beta, eps, gelu_input, weight, bias, recompute,
                             conv1x1)
    return out.view(*x.shape[:-1], out.shape[-1])
