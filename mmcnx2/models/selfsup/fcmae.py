# Copyright (c) mmcnx2 contributors. All rights reserved.
from typing import Dict, List, Optional, Tuple, Union

import torch
import torch.nn as nn
from mmpretrain.models.selfsup import BaseSelfSupervisor
from mmpretrain.structures import DataSample

from ...registry import register_model
from ..backbones.convnext_v2 import MASK_PATCH_SIZE
from ..utils.init import init_fcmae_official_decoder, init_fcmae_official_encoder


@register_model
class FCMAE(BaseSelfSupervisor):
    """Fully Convolutional Masked AutoEncoder (ConvNeXt V2, https://arxiv.org/abs/2301.00808).

    Dense computation of the sparse FCMAE encoder: the mask is passed to
    ``ConvNeXtV2.forward(x, mask)``, which keeps removed patches empty at every stage, so no
    MinkowskiEngine (and no GPU) is needed.

    Args:
        backbone (dict): ``ConvNeXtV2`` config returning its last stage as a feature map
            without output norm, as the official encoder (last entry of ``out_indices`` =
            last stage, ``gap_before_final_norm=False``, ``out_norms=False``), so the
            checkpoint's ``backbone.*`` hold exactly the encoder.
        neck (dict): Decoder config, e.g. ``FCMAEDecoder``.
        head (dict): Loss head config, e.g. ``FCMAEHead``.
        mask_ratio (float): Fraction of patches removed; ``int(L * (1 - mask_ratio))`` of the
            L patches are kept per sample. Defaults to 0.6.
        init (str): Weight init of the encoder and of the decoder, each where it has no
            ``init_cfg`` (a checkpoint or an explicit init is kept; nothing is re-initialised
            when the model has ``pretrained``/``init_cfg``). ``'official'`` (default): the
            official FCMAE's re-initialisation after the modules' own init, timm trunc_normal
            std 1 (cut at +-2) for the stem, depthwise and pointwise layers and the decoder's
            convs, std 0.02 for the downsample convs, PyTorch's default for the decoder's
            Linears (:func:`~mmcnx2.models.utils.init.init_fcmae_official_encoder`,
            :func:`~mmcnx2.models.utils.init.init_fcmae_official_decoder`). ``'convnext'``:
            the modules' own ConvNeXt V2 init (trunc_normal std 0.02 for every conv and
            Linear).
        pretrained (str, optional): Checkpoint to initialise the whole model from.
        data_preprocessor (dict, optional): Defaults to ``SelfSupDataPreprocessor``.
        init_cfg (dict, optional): mmengine init config.

    Shapes:
        inputs: (N, C, H, W) with H and W multiples of ``patch_size`` (``MASK_PATCH_SIZE``, 32).
        mask: (N, H / 32, W / 32), 1 = removed.
    """
    # Side of a mask patch: the encoder's stride, one constant for the encoder, decoder and
    # loss.
    patch_size = MASK_PATCH_SIZE
    # Values of ``init``.
    weight_inits = ('official', 'convnext')

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 mask_ratio: float = 0.6,
                 init: str = 'official',
                 pretrained: Optional[str] = None,
                 data_preprocessor: Optional[Union[dict, nn.Module]] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(
            backbone=backbone,
            neck=neck,
            head=head,
            pretrained=pretrained,
            data_preprocessor=data_preprocessor,
            init_cfg=init_cfg)
        if init not in self.weight_inits:
            raise ValueError(f'FCMAE init must be one of {self.weight_inits}, got {init!r}')
        self.init = init
        if not 0 < mask_ratio < 1:
            # The loss averages over removed patches, so some must be removed.
            raise ValueError(f'mask_ratio must be in (0, 1), got {mask_ratio}')
        last_stage = len(self.backbone.stages) - 1
        if (self.backbone.out_indices[-1] != last_stage or self.backbone.gap_before_final_norm
                or getattr(self.backbone, 'out_norms', True)):
            raise ValueError(
                'FCMAE needs the last backbone stage as a feature map without output norm '
                '(as the official encoder): set the backbone\'s out_indices to include '
                f'{last_stage}, gap_before_final_norm=False and out_norms=False, got '
                f'out_indices={self.backbone.out_indices}, gap_before_final_norm='
                f'{self.backbone.gap_before_final_norm}, out_norms={self.backbone.out_norms}')
        self.mask_ratio = mask_ratio

    def init_weights(self):
        first_init = not self._is_init
        super().init_weights()
        if not first_init or self.init != 'official' or self.init_cfg is not None:
            return
        # A part loaded from a checkpoint (or with an explicit init_cfg) is kept.
        if self.backbone.init_cfg is None:
            init_fcmae_official_encoder(self.backbone)
        if self.neck.init_cfg is None:
            init_fcmae_official_decoder(self.neck)

    def random_mask(self, inputs: torch.Tensor) -> torch.Tensor:
        """Per-sample random patch mask from torch's (seeded) global generator.

        The ``int(L * (1 - mask_ratio))`` patches with the lowest noise are kept.

        Returns:
            Tensor: (N, h, w) float mask, 1 = removed.
        """
        n, _, height, width = inputs.shape
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f'FCMAE input sides must be multiples of patch_size {p}, '
                             f'got {height}x{width}')
        h, w = height // p, width // p
        num_keep = int(h * w * (1 - self.mask_ratio))
        noise = torch.rand(n, h * w, device=inputs.device)
        keep = noise.argsort(dim=1)[:, :num_keep]
        mask = torch.ones(n, h * w, device=inputs.device)
        mask.scatter_(1, keep, 0.)
        return mask.reshape(n, h, w)

    def reconstruct(self,
                    inputs: torch.Tensor,
                    mask: Optional[torch.Tensor] = None
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encode the visible patches and predict every patch.

        Args:
            inputs (Tensor): (N, C, H, W) images.
            mask (Tensor, optional): (N, h, w), 1 = removed; drawn at random if None.

        Returns:
            tuple[Tensor, Tensor]: prediction (N, p*p*C, h, w) and the mask used.
        """
        if mask is None:
            mask = self.random_mask(inputs)
        latent = self.backbone(inputs, mask)[-1]
        return self.neck(latent, mask), mask

    def loss(self, inputs: torch.Tensor, data_samples: List[DataSample],
             **kwargs) -> Dict[str, torch.Tensor]:
        pred, mask = self.reconstruct(inputs)
        return dict(loss=self.head.loss(pred, inputs, mask))
