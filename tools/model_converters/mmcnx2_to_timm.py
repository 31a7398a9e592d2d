# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Export a ConvNeXt V2 checkpoint to timm's ``convnextv2_<arch>`` layout.

The source is any checkpoint mmcnx2 reads: one trained here (classifier, FCMAE, Mask R-CNN or
UperNet: its ``backbone.*`` tensors), an official, HF or mmpretrain one, a URL or a model name.
The output (``.pth``, or ``.safetensors`` by its extension) loads strictly into
``timm.create_model('convnextv2_<arch>', num_classes=N)``; the tool prints that call.

Example:
    python tools/model_converters/mmcnx2_to_timm.py \\
        work_dirs/convnextv2-tiny_fcmae-pre_8xb128-300e_in1k/epoch_300.pth convnextv2_tiny.pth
"""
import argparse
import sys

import torch

from mmcnx2.converters import (describe_arch, export_state_dict, group_keys,
                               load_converted_state_dict)


def parse_args():
    parser = argparse.ArgumentParser(description='Export a ConvNeXt V2 checkpoint to timm.')
    parser.add_argument('src', help='checkpoint file, URL or mmcnx2 model name')
    parser.add_argument('dst', help='output .pth or .safetensors file')
    parser.add_argument(
        '--conv-mlp',
        choices=['auto', 'yes', 'no'],
        default='auto',
        help="MLP weights as 1x1 convs; 'auto' follows timm (atto, femto, pico, nano)")
    return parser.parse_args()


def main():
    args = parse_args()
    try:
        _, state_dict = load_converted_state_dict(args.src)
        conv_mlp = None if args.conv_mlp == 'auto' else args.conv_mlp == 'yes'
        exported, dropped = export_state_dict(state_dict, 'timm', conv_mlp=conv_mlp)
        arch = describe_arch(state_dict)
    except (OSError, ValueError) as err:
        sys.exit(f'error: {err}')
    if args.dst.endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in exported.items()}, args.dst)
    else:
        torch.save(exported, args.dst)
    name = f"'convnextv2_{arch['arch']}'" if arch['arch'] else (
        f"'convnextv2_tiny', depths={arch['depths']}, dims={arch['channels']}")
    print(f'{args.src} -> {args.dst}: {len(exported)} tensors for '
          f"timm.create_model({name}, num_classes={arch['num_classes']})")
    if 'head.norm.weight' not in exported:
        print('no final norm (an FCMAE encoder): timm keeps its own head.norm; load with '
              'strict=False')
    if dropped:
        print(f'dropped {len(dropped)} tensors without a timm counterpart: '
              f'{group_keys(dropped)}')


if __name__ == '__main__':
    main()
