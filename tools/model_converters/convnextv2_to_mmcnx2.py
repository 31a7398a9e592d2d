# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Convert a ConvNeXt V2 checkpoint into mmcnx2's mmpretrain ``ImageClassifier`` layout.

The source format is detected: official (fine-tuned, dense FCMAE "pretrain-only", sparse FCMAE
pretraining), timm, HF transformers (a ``model.safetensors``/``pytorch_model.bin`` file or the
model directory) or mmpretrain. The output loads with ``load_from=DST`` in a classifier config
or ``init_cfg=dict(type='Pretrained', checkpoint=DST, prefix='backbone.')`` in any ConvNeXtV2.

Examples:
    python tools/model_converters/convnextv2_to_mmcnx2.py \\
        convnextv2_tiny_1k_224_ema.pt checkpoints/convnextv2-tiny_in1k.pth
    python tools/model_converters/convnextv2_to_mmcnx2.py --keep-decoder \\
        convnextv2_base_1k_224_fcmae.pt checkpoints/fcmae_convnextv2-base.pth
"""
import argparse
import sys

from mmcnx2.converters import FORMATS, convert_checkpoint


def parse_args():
    parser = argparse.ArgumentParser(
        description='Convert a ConvNeXt V2 checkpoint (formats: ' + ', '.join(FORMATS) +
        ') into mmcnx2 layout.')
    parser.add_argument('src', help='source checkpoint file or HF model directory')
    parser.add_argument('dst', help='output checkpoint file')
    parser.add_argument(
        '--keep-decoder',
        action='store_true',
        help='keep the FCMAE decoder as neck.* (to continue pretraining)')
    return parser.parse_args()


def main():
    args = parse_args()
    try:
        fmt, state_dict = convert_checkpoint(args.src, args.dst, args.keep_decoder)
    except (OSError, ValueError) as err:
        sys.exit(f'error: {err}')
    parts = {p: sum(k.startswith(p + '.') for k in state_dict)
             for p in ('backbone', 'head', 'neck')}
    print(f'{args.src} ({fmt}) -> {args.dst}: ' +
          ', '.join(f'{n} {p} tensors' for p, n in parts.items() if n))
    if fmt == 'official-fcmae' and not args.keep_decoder:
        print('FCMAE decoder dropped; pass --keep-decoder to keep it as neck.*')


if __name__ == '__main__':
    main()
