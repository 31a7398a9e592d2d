# Copyright (c) mmcnx2 contributors. All rights reserved.
import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ...registry import register_model
from ..backbones.convnext_v2 import MASK_PATCH_SIZE, ConvNeXtV2Block
from ..utils import init_convnext_weights


@register_model
class FCMAEDecoder(BaseModule):
    """FCMAE decoder: 1x1 projection, mask token at removed sites, dense ConvNeXt V2 blocks,
    1x1 prediction of every patch's pixels.

    Parameter names match the official decoder (``proj``, ``mask_token``, ``decoder.{j}``,
    ``pred``) so converted official checkpoints can continue pretraining.

    Args:
        in_channels (int): Channels C of the encoder's last stage.
        decoder_dim (int): Width D of the decoder. Defaults to 512.
        decoder_depth (int): Number of ConvNeXt V2 blocks. Defaults to 1.
        out_channels (int): Image channels c to predict. Defaults to 3.
        init_cfg (dict, optional): mmengine init config; without one, :meth:`init_weights`.

    Shapes:
        x: (N, C, h, w), the encoder output (zero at removed sites).
        mask: (N, h, w), 1 = removed patch.
        returns: (N, p*p*c, h, w), patch pixels in (p, q, c) order; p is the encoder stride
            ``MASK_PATCH_SIZE``.
    """

    def __init__(self,
                 in_channels: int,
                 decoder_dim: int = 512,
                 decoder_depth: int = 1,
                 out_channels: int = 3,
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.proj = nn.Conv2d(in_channels, decoder_dim, kernel_size=1)
        self.mask_token = nn.Parameter(torch.zeros(1, decoder_dim, 1, 1))
        self.decoder = nn.Sequential(
            *[ConvNeXtV2Block(decoder_dim) for _ in range(decoder_depth)])
        self.pred = nn.Conv2d(decoder_dim, MASK_PATCH_SIZE**2 * out_channels, kernel_size=1)

    def init_weights(self):
        """The ConvNeXt V2 init: trunc_normal(0.02) conv/linear weights, zero biases, unit
        LayerNorms, zero GRN, normal(0.02) mask token.

        The official FCMAE re-initialises the decoder differently (std 1 convs, PyTorch's
        default Linears); ``FCMAE(init='official')`` does that after this init.
        """
        super().init_weights()
        if self.init_cfg is not None:
            return
        init_convnext_weights(self)
        nn.init.normal_(self.mask_token, std=.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if mask.shape != (x.shape[0], *x.shape[-2:]):
            raise ValueError(f'mask shape {tuple(mask.shape)} does not match features '
                             f'{tuple(x.shape)}; expected (N, h, w)')
        x = self.proj(x)
        mask = mask.unsqueeze(1).to(x.dtype)  # (N, h, w) -> (N, 1, h, w)
        x = x * (1. - mask) + self.mask_token * mask
        x = self.decoder(x)
        return self.pred(x)
