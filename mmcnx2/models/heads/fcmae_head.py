# Copyright (c) mmcnx2 contributors. All rights reserved.
from typing import Optional, Tuple

import torch
from mmpretrain.models.heads import MAEPretrainHead

from ...registry import register_model
from ..backbones.convnext_v2 import MASK_PATCH_SIZE


@register_model
class FCMAEHead(MAEPretrainHead):
    """FCMAE reconstruction loss: MSE on (per-patch normalised) pixels of removed patches.

    mmpretrain's ``MAEPretrainHead`` already computes exactly the official FCMAE loss
    (patchify in (h, w, p, q, c) order, per-patch mean/var normalisation with var + 1e-6,
    MSE averaged over pixels, then over removed patches). This subclass accepts the decoder's
    convolutional output and the (N, h, w) patch mask, allows non-square inputs, and maps
    predictions back to images.

    Args:
        loss (dict): Pixel loss config. Defaults to
            ``dict(type='PixelReconstructionLoss', criterion='L2')``.
        norm_pix (bool): Normalise each target patch by its own mean and variance.
            Defaults to True.
        in_channels (int): Image channels c. Defaults to 3.

    Shapes (p: the encoder stride ``MASK_PATCH_SIZE``, the side of a patch):
        pred: (N, p*p*c, h, w), one prediction per patch (``FCMAEDecoder`` output).
        target: (N, c, h*p, w*p), the (data-preprocessed) input images.
        mask: (N, h, w), 1 = removed patch.
    """

    def __init__(self,
                 loss: dict = dict(type='PixelReconstructionLoss', criterion='L2'),
                 norm_pix: bool = True,
                 in_channels: int = 3) -> None:
        super().__init__(
            loss=loss, norm_pix=norm_pix, patch_size=MASK_PATCH_SIZE, in_channels=in_channels)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(N, c, h*p, w*p) -> (N, h*w, p*p*c), patches row-major, pixels in (p, q, c) order."""
        n, c, height, width = imgs.shape
        p = self.patch_size
        if c != self.in_channels or height % p or width % p:
            raise ValueError(
                f'FCMAEHead expects (N, {self.in_channels}, H, W) images with H and W '
                f'multiples of patch_size {p}, got shape {tuple(imgs.shape)}')
        h, w = height // p, width // p
        x = imgs.reshape(n, c, h, p, w, p)
        x = torch.einsum('nchpwq->nhwpqc', x)
        return x.reshape(n, h * w, p * p * c)

    def unpatchify(self,
                   x: torch.Tensor,
                   grid_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """(N, h*w, p*p*c) -> (N, c, h*p, w*p); ``grid_size`` (h, w) defaults to square."""
        n, num_patches, _ = x.shape
        if grid_size is None:
            side = int(num_patches**.5)
            grid_size = (side, side)
        h, w = grid_size
        if h * w != num_patches:
            raise ValueError(f'grid_size {grid_size} does not hold {num_patches} patches')
        p, c = self.patch_size, self.in_channels
        x = x.reshape(n, h, w, p, p, c)
        x = torch.einsum('nhwpqc->nchpwq', x)
        return x.reshape(n, c, h * p, w * p)

    @staticmethod
    def _to_patches(pred: torch.Tensor) -> torch.Tensor:
        # (N, p*p*c, h, w) -> (N, h*w, p*p*c)
        return pred.flatten(2).transpose(1, 2)

    def loss(self, pred: torch.Tensor, target: torch.Tensor,
             mask: torch.Tensor) -> torch.Tensor:
        """Mean over removed patches of the per-patch pixel MSE (shapes in the class doc)."""
        if pred.shape[-2:] != mask.shape[-2:]:
            raise ValueError(f'prediction grid {tuple(pred.shape[-2:])} does not match '
                             f'mask {tuple(mask.shape)}')
        return super().loss(self._to_patches(pred), target, mask.flatten(1).to(pred.dtype))

    def pred_to_image(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Predictions as images in the target's pixel space.

        With ``norm_pix`` each predicted patch is de-normalised with the mean and std of the
        corresponding target patch (the statistics the loss normalised with).

        Args:
            pred (Tensor): (N, p*p*c, h, w).
            target (Tensor): (N, c, h*p, w*p).

        Returns:
            Tensor: (N, c, h*p, w*p).
        """
        patches = self._to_patches(pred)
        if self.norm_pix:
            target_patches = self.patchify(target)
            mean = target_patches.mean(dim=-1, keepdim=True)
            var = target_patches.var(dim=-1, keepdim=True)
            patches = patches * (var + 1.e-6)**.5 + mean
        return self.unpatchify(patches, tuple(pred.shape[-2:]))
