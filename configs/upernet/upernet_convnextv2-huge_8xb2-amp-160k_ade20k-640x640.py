_base_ = '../_base_/upernet_convnextv2_ade20k-640x640.py'

# ConvNeXt V2-H after FCMAE and IN-22K + IN-1K fine-tuning (official
# convnextv2_huge_22k_384_ema.pt converted with tools/model_converters/convnextv2_to_mmcnx2.py).
pretrained = 'checkpoints/convnextv2-huge_fcmae-in22k-in1k-384-ft_mmcnx2.pth'

model = dict(
    backbone=dict(
        arch='huge',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    decode_head=dict(in_channels=_base_.convnextv2_widths['huge']),
    auxiliary_head=dict(in_channels=_base_.convnextv2_widths['huge'][2]))
