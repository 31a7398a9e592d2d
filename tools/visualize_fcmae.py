# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Show what an FCMAE model reconstructs.

For each image, writes ``OUT/<image name>.png``: original | masked input | reconstruction |
reconstruction pasted into the removed patches of the original.

Usage:
    python tools/visualize_fcmae.py CONFIG CHECKPOINT IMG [IMG ...] --out DIR [--seed 0]
"""
import argparse
import os
import os.path as osp

import numpy as np
import torch
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from mmpretrain.apis import init_model
from PIL import Image

import mmcnx2  # noqa: F401  (registers FCMAE)
from mmcnx2.engine import install_safe_checkpoint_loading
from mmcnx2.models.utils import expand_patch_mask


def parse_args():
    parser = argparse.ArgumentParser(description='Visualize FCMAE reconstructions')
    parser.add_argument('config', help='FCMAE config file')
    parser.add_argument('checkpoint', help='FCMAE checkpoint')
    parser.add_argument('images', nargs='+', help='image files')
    parser.add_argument('--out', required=True, help='folder for the PNG grids')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random masks')
    parser.add_argument(
        '--size', type=int, default=224, help='images are resized to SIZE x SIZE '
        '(a multiple of 32)')
    parser.add_argument('--device', default='cpu', help='e.g. cpu or cuda:0')
    return parser.parse_args()


@torch.no_grad()
def reconstruction_panels(model, inputs: torch.Tensor) -> torch.Tensor:
    """Original, masked input, reconstruction and pasted reconstruction.

    Args:
        model (FCMAE): The model, in eval mode.
        inputs (Tensor): (N, 3, H, W) data-preprocessed images.

    Returns:
        Tensor: (4, N, 3, H, W) pixel values (the data preprocessor's normalisation undone);
        removed patches are black in the masked input.
    """
    pred, mask = model.reconstruct(inputs)
    visible = 1. - expand_patch_mask(mask, model.patch_size)
    preprocessor = model.data_preprocessor
    original, recon = (x * preprocessor.std + preprocessor.mean
                       for x in (inputs, model.head.pred_to_image(pred, inputs)))
    return torch.stack([original, original * visible, recon,
                        original * visible + recon * (1. - visible)])


def main():
    args = parse_args()
    if args.size % 32:
        raise ValueError(f'--size must be a multiple of 32, got {args.size}')
    install_safe_checkpoint_loading()
    model = init_model(args.config, args.checkpoint, device=args.device).eval()
    init_default_scope('mmpretrain')
    pipeline = Compose([
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(args.size, args.size), backend='pillow',
             interpolation='bicubic'),
        dict(type='PackInputs'),
    ])
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(args.seed)
    for path in args.images:
        packed = pipeline(dict(img_path=path))
        data = model.data_preprocessor(
            dict(inputs=packed['inputs'][None], data_samples=None))
        panels = reconstruction_panels(model, data['inputs'])[:, 0]
        # (4, 3, H, W) -> (H, 4 * W, 3)
        grid = torch.cat(list(panels), dim=-1).permute(1, 2, 0)
        grid = grid.clamp(0, 255).round().byte().cpu().numpy()
        out_file = osp.join(args.out, osp.splitext(osp.basename(path))[0] + '.png')
        Image.fromarray(np.ascontiguousarray(grid)).save(out_file)
        print(f'{path} -> {out_file}')


if __name__ == '__main__':
    main()
