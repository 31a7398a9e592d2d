# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Export a ConvNeXt V2 checkpoint as an HF transformers model directory.

The source is any checkpoint mmcnx2 reads (see ``mmcnx2_to_timm.py``). The output directory
(``config.json`` + ``model.safetensors``) loads with
``ConvNextV2ForImageClassification.from_pretrained(DST)`` (a source with a classifier) or
``ConvNextV2Model.from_pretrained(DST)`` (a backbone only).

Example:
    python tools/model_converters/mmcnx2_to_hf.py \\
        work_dirs/convnextv2-tiny_fcmae-pre_8xb128-300e_in1k/epoch_300.pth hf/convnextv2-tiny
"""
import argparse
import sys

from mmcnx2.converters import group_keys, load_converted_state_dict, save_hf


def parse_args():
    parser = argparse.ArgumentParser(description='Export a ConvNeXt V2 checkpoint to HF.')
    parser.add_argument('src', help='checkpoint file, URL or mmcnx2 model name')
    parser.add_argument('dst', help='output directory')
    return parser.parse_args()


def main():
    args = parse_args()
    try:
        _, state_dict = load_converted_state_dict(args.src)
        hf_class, dropped = save_hf(state_dict, args.dst)
    except (OSError, ValueError) as err:
        sys.exit(f'error: {err}')
    print(f'{args.src} -> {args.dst}: {hf_class}.from_pretrained({args.dst!r})')
    if dropped:
        print(f'dropped {len(dropped)} tensors without an HF counterpart: '
              f'{group_keys(dropped)}')


if __name__ == '__main__':
    main()
