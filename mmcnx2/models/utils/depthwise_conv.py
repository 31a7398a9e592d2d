# Copyright (c) mmcnx2 contributors. All rights reserved.
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd import Function


class _DepthwiseConvFunction(Function):
    """Depthwise conv whose bias gradient is a plain sum.

    oneDNN's depthwise convolution backward spends longer on the bias gradient than on the
    weight gradient (channels_last, every ConvNeXt V2 stage shape, measured on x86 CPUs);
    ``dout.sum`` costs a few percent of that.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.padding = padding
        ctx.save_for_backward(x, weight)
        return F.conv2d(x, weight, bias, padding=padding, groups=x.shape[1])

    @staticmethod
    def backward(ctx, dout):
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad[:3]
        dx, d_weight, _ = torch.ops.aten.convolution_backward(
            dout, x, weight, bias_sizes=None, stride=[1, 1], padding=[ctx.padding] * 2,
            dilation=[1, 1], transposed=False, output_padding=[0, 0], groups=x.shape[1],
            output_mask=[need_x, need_weight, False])
        d_bias = dout.sum(dim=(0, 2, 3)) if need_bias else None
        return dx, d_weight, d_bias, None


def depthwise_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a stride-1 depthwise ``nn.Conv2d`` with a bias and integer padding,
    with the cheaper backward. For eager CPU runs outside autocast (autocast would not cast
    its inputs); :mod:`~mmcnx2.models.utils.fast_block` decides when it applies."""
    return _DepthwiseConvFunction.apply(x, conv.weight, conv.bias, conv.padding[0])
