_base_ = '../_base_/upernet_convnextv2_ade20k-512x512.py'

# ConvNeXt V2 fine-tuned on IN-1K after FCMAE (official convnextv2_base_1k_224_ema.pt
# converted with tools/model_converters/convnextv2_to_mmcnx2.py), or any checkpoint of this
# repo with a `backbone.` ConvNeXtV2 (fine-tuning or FCMAE).
pretrained = 'work_dirs/convnextv2-base_fcmae-pre_8xb128-100e_in1k/epoch_100.pth'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    decode_head=dict(in_channels=_base_.convnextv2_widths['base']),
    auxiliary_head=dict(in_channels=_base_.convnextv2_widths['base'][2]))
