# Copyright (c) mmcnx2 contributors. All rights reserved.
"""The fast implementation of :class:`~mmcnx2.models.backbones.convnext_v2.ConvNeXtV2Block`'s
forward, and the one place that decides when it runs (:func:`use_fast_path`).

Same numbers as the block's formula (``ConvNeXtV2Block.residual``; tests/test_fast_paths.py
compares outputs and every gradient), from:

- everything between the depthwise conv and the residual add on channels-last (N, H, W, C)
  data, a free view of the channels_last (N, C, H, W) maps the backbone passes around;
- GELU + GRN + pointwise_conv2 as one autograd function with a hand-written backward
  (:func:`~mmcnx2.models.utils.grn_function.grn`): fewer passes over the 4C-wide activation,
  and with ``recompute_grn`` one such tensor kept for backward instead of three;
- with an FCMAE mask that keeps the same number of sites in every sample, the per-site MLP on
  the kept sites only;
- in eager CPU runs, three kernels oneDNN runs faster (``cpu_kernels``): the pointwise convs as
  1x1 convolutions on the channels_last view, GRN's reductions per sample, and a depthwise
  conv backward whose bias gradient is a plain sum. Their shares are measured in the README's
  "Benchmark" section.
"""
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from torch.nn.modules import module as torch_module

from .depthwise_conv import depthwise_conv
from .grn_function import grn, pointwise_linear

# What switched_off() can switch off: the whole fast path, or only its CPU kernels.
PARTS = ('fast_path', 'cpu_kernels')
_switched_off = set()


@contextmanager
def switched_off(part: str = 'fast_path') -> Iterator[None]:
    """Within this context the fast path (every block then runs its formula) or only its CPU
    kernels are off: a reference for tests, and what the benchmark times the shares with."""
    if part not in PARTS:
        raise ValueError(f'part must be one of {PARTS}, got {part!r}')
    was_off = part in _switched_off
    _switched_off.add(part)
    try:
        yield
    finally:
        if not was_off:
            _switched_off.discard(part)


def _observed(block: nn.Module) -> bool:
    """Whether a hook would watch one of the block's layers run (the fast path fuses them)."""
    hooks = ('_forward_hooks', '_forward_pre_hooks', '_backward_hooks', '_backward_pre_hooks')
    if any(getattr(torch_module, f'_global{name}') for name in hooks):
        return True
    return any(getattr(layer, name) for layer in block.children() for name in hooks)


def use_fast_path(block: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``block`` runs on the fast implementation for input ``x``.

    Not while tracing or exporting (TorchScript, ONNX, ``torch.export``): the exported graph is
    the formula, which every exporter and runtime understands. Not when a hook is registered on
    one of the block's layers (``block.grn`` ...): hooks see the formula's tensors. Not within
    :func:`switched_off`. Scripting is excluded by the block itself.
    """
    if 'fast_path' in _switched_off or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() \
            or torch.compiler.is_exporting():
        return False
    return not _observed(block)


def _kept_rows(visible: torch.Tensor) -> Optional[torch.Tensor]:
    """Indices of the kept sites among the N*H*W rows of a channels-last map, sample by
    sample; None when samples keep different numbers of sites."""
    flat = visible.flatten(1)  # (N, 1, H, W) -> (N, H*W)
    counts = flat.sum(1)
    if not bool((counts == counts[0]).all()):
        return None
    return flat.flatten().nonzero().squeeze(1)


def _residual(block: nn.Module, x: torch.Tensor, visible: Optional[torch.Tensor],
              kept: Optional[torch.Tensor], cpu_kernels: bool) -> torch.Tensor:
    """The block's residual branch, channels-last: (N, H, W, C), or (N, L, 1, C) for the L
    kept sites of each sample with ``kept``."""
    conv = block.depthwise_conv
    if cpu_kernels and not torch.is_autocast_enabled('cpu') and conv.bias is not None:
        x = depthwise_conv(x, conv)
    else:
        x = conv(x)
    x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    if kept is not None:
        # (N*H*W, C) rows -> (N, L, 1, C): the L kept sites of each sample.
        n, channels = x.shape[0], x.shape[-1]
        x = x.reshape(-1, channels).index_select(0, kept).view(n, -1, 1, channels)
        visible = None  # nothing removed is left
    elif visible is not None:
        visible = visible.permute(0, 2, 3, 1)  # (N, 1, H, W) -> (N, H, W, 1)
    x = pointwise_linear(block.norm(x), block.pointwise_conv1.weight,
                         block.pointwise_conv1.bias, cpu_kernels)
    if visible is not None:
        # GELU(0) = 0, so masking the pre-activation also removes the sites from the GRN
        # statistics.
        x = x * visible
    x = grn(x, block.grn.gamma, block.grn.beta, block.grn.eps, gelu_input=True,
            weight=block.pointwise_conv2.weight, bias=block.pointwise_conv2.bias,
            recompute=block.recompute_grn, stats=block.grn.stats, cpu_kernels=cpu_kernels)
    return x if visible is None else x * visible


def forward(block: nn.Module,
            x: torch.Tensor,
            visible: Optional[torch.Tensor] = None,
            cpu_kernels: Optional[bool] = None) -> torch.Tensor:
    """``block(x, visible)`` on the fast implementation (shapes as the block's).

    ``cpu_kernels`` defaults to eager CPU runs: under torch.compile Inductor picks its own
    kernels, and compiles the device-neutral formulations to faster code than the CPU ones.
    Tests set it to check both on CPU.
    """
    if cpu_kernels is None:
        cpu_kernels = (x.device.type == 'cpu' and not torch.compiler.is_compiling()
                       and 'cpu_kernels' not in _switched_off)
    kept = None if visible is None else _kept_rows(visible)
    if block.with_cp and x.requires_grad:
        residual = cp.checkpoint(
            _residual, block, x, visible, kept, cpu_kernels, use_reentrant=False)
    else:
        residual = _residual(block, x, visible, kept, cpu_kernels)
    residual = block.drop_path(residual)
    shortcut = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    if kept is None:
        out = shortcut + residual
    else:
        # Removed sites get no residual: they stay zero.
        # Under autocast the residual may be in a lower precision than the shortcut.
        residual = residual.reshape(-1, residual.shape[-1]).to(shortcut.dtype)
        out = shortcut.reshape(-1, shortcut.shape[-1]).index_add(
            0, kept, residual).view(shortcut.shape)
    return out.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
