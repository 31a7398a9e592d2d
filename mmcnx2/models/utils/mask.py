# Copyright (c) mmcnx2 contributors. All rights reserved.
import torch


def expand_patch_mask(mask: torch.Tensor, scale: int) -> torch.Tensor:
    """Upsample a patch mask to a feature map's resolution.

    Args:
        mask (Tensor): (N, h, w), 1 = removed patch.
        scale (int): Feature sites per patch side.

    Returns:
        Tensor: (N, 1, h * scale, w * scale).
    """
    if scale > 1:
        mask = mask.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return mask.unsqueeze(1)
