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


def init_fcmae_official_encoder(encoder: nn.Module) -> None:
    """The official FCMAE re-initialisation of the encoder, on the dense modules that compute
    what the official sparse ones do.

    The official ``FCMAE`` runs ``_init_weights`` over the whole model after the sparse
    encoder's own init (ConvNeXt-V2 @2553895: ``models/fcmae.py`` lines 69-89 after
    ``models/convnextv2_sparse.py`` lines 102-113). Its trunc_normal is timm's, std 1 unless
    given, cut at -2 and 2 (a std of 0.88 in effect). Weights, with zero biases:

    - stem ``downsample_layers.0.0`` (official ``nn.Conv2d``): std 1;
    - ``downsample_layers.{1,2,3}.1`` (``MinkowskiConvolution``): std 0.02;
    - ``depthwise_conv`` (``MinkowskiDepthwiseConvolution``): std 1;
    - ``pointwise_conv{1,2}`` (``MinkowskiLinear``): std 1.

    LayerNorms and GRN keep their own init (one/zero and zero), which the official code gives
    them too.

    Args:
        encoder (nn.Module): A ConvNeXtV2 (``downsample_layers``, ``stages``).
    """
    if not (hasattr(encoder, 'downsample_layers') and hasattr(encoder, 'stages')):
        raise TypeError('The official FCMAE init needs a ConvNeXtV2 encoder; '
                        f'{type(encoder).__name__} has no downsample_layers / stages')
    for part in (encoder.downsample_layers[0], *encoder.stages):
        for m in part.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                trunc_normal_init(m, std=1., bias=0.)
    for downsample in encoder.downsample_layers[1:]:
        for m in downsample.modules():
            if isinstance(m, nn.Conv2d):
                trunc_normal_init(m, std=.02, bias=0.)


def init_fcmae_official_decoder(decoder: nn.Module) -> None:
    """The official FCMAE re-initialisation of the decoder (ConvNeXt-V2 @2553895
    ``models/fcmae.py`` lines 71-89, ``_init_weights``): every ``nn.Conv2d`` (``proj``,
    ``pred``, the blocks' ``depthwise_conv``) timm trunc_normal std 1 (cut at -2 and 2) with
    zero bias; the blocks' ``nn.Linear`` layers, which no rule matches, keep PyTorch's default
    init (weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))); ``mask_token`` normal std 0.02;
    LayerNorms one/zero and GRN zero, as constructed.

    Args:
        decoder (nn.Module): An FCMAEDecoder (``mask_token``, convs and Linears).
    """
    if not hasattr(decoder, 'mask_token'):
        raise TypeError('The official FCMAE init needs an FCMAEDecoder; '
                        f'{type(decoder).__name__} has no mask_token')
    for m in decoder.modules():
        if isinstance(m, nn.Conv2d):
            trunc_normal_init(m, std=1., bias=0.)
        elif isinstance(m, nn.Linear):
            m.reset_parameters()
    nn.init.normal_(decoder.mask_token, std=.02)
