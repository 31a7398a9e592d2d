_base_ = '../_base_/upernet_convnextv2_ade20k-640x640.py'

# ConvNeXt V2-H after FCMAE and IN-22K + IN-1K fine-tuning: the official
# convnextv2_huge_22k_384_ema.pt by its model name, downloaded and converted on load (a path
# or URL works too).
pretrained = 'convnextv2-huge_fcmae-in22k-pre_3rdparty_in1k-384px'

model = dict(
    backbone=dict(
        arch='huge',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    decode_head=dict(in_channels=_base_.convnextv2_widths['huge']),
    auxiliary_head=dict(in_channels=_base_.convnextv2_widths['huge'][2]))
