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
- in eager CPU runs (``conv1x1``), the pointwise convs as 1x1 convolutions on the
  channels_last view, which oneDNN runs faster than Linear's GEMM.

The README's "Benchmark" section gives each part's measured share (and the CPU tricks that
were measured and dropped).
"""
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from torch.nn.modules import module as torch_module

from .grn_function import grn, pointwise_linear

# What switched_off() can switch off: the whole fast path, or only its 1x1 convolutions.
PARTS = ('fast_path', 'conv1x1')
_switched_off = set()


@contextmanager
def switched_off(part: str = 'fast_path') -> Iterator[None]:
    """Within this context the fast path (every block then runs its formula) or only its 1x1
    convolutions are off: a reference for tests, and what the benchmark times the shares
    with."""
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
              kept: Optional[torch.Tensor], conv1x1: bool) -> torch.Tensor:
    """The block's residual branch, channels-last: (N, H, W, C), or (N, L, 1, C) for the L
    kept sites of each sample with ``kept``."""
    x = block.depthwise_conv(x).permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    if kept is not None:
        # (N*H*W, C) rows -> (N, L, 1, C): the L kept sites of each sample.
        n, channels = x.shape[0], x.shape[-1]
        x = x.reshape(-1, channels).index_select(0, kept).view(n, -1, 1, channels)
        visible = None  # nothing removed is left
    elif visible is not None:
        visible = visible.permute(0, 2, 3, 1)  # (N, 1, H, W) -> (N, H, W, 1)
    x = pointwise_linear(block.norm(x), block.pointwise_conv1.weight,
                         block.pointwise_conv1.bias, conv1x1)
    if visible is not None:
        # GELU(0) = 0, so masking the pre-activation also removes the sites from the GRN
        # statistics.
        x = x * visible
    x = grn(x, block.grn.gamma, block.grn.beta, block.grn.eps, gelu_input=True,
            weight=block.pointwise_conv2.weight, bias=block.pointwise_conv2.bias,
            recompute=block.recompute_grn, stats=block.grn.stats, conv1x1=conv1x1)
    return x if visible is None else x * visible


def forward(block: nn.Module,
            x: torch.Tensor,
            visible: Optional[torch.Tensor] = None,
            conv1x1: Optional[bool] = None) -> torch.Tensor:
    """``block(x, visible)`` on the fast implementation (shapes as the block's).

    ``conv1x1`` defaults to eager CPU runs, where it was measured to pay (under torch.compile
    Inductor picks its own kernels). Tests set it to check both formulations on CPU.
    """
    if conv1x1 is None:
        conv1x1 = (x.device.type == 'cpu' and not torch.compiler.is_compiling()
                   and 'conv1x1' not in _switched_off)
    kept = None if visible is None else _kept_rows(visible)
    if block.with_cp and x.requires_grad:
        residual = cp.checkpoint(
            _residual, block, x, visible, kept, conv1x1, use_reentrant=False)
    else:
        residual = _residual(block, x, visible, kept, conv1x1)
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
