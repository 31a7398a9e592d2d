_base_ = '../_base_/upernet_convnextv2_ade20k-512x512.py'

# ConvNeXt V2 fine-tuned on IN-1K after FCMAE, any checkpoint of this repo with a
# `backbone.` ConvNeXtV2 (fine-tuning or FCMAE), or an official checkpoint by path, URL or
# model name, converted on load, e.g.
# `--cfg-options pretrained=convnextv2-large_fcmae-pre_3rdparty_in1k`.
pretrained = 'work_dirs/convnextv2-large_fcmae-pre_8xb128-100e_in1k/epoch_100.pth'

model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    decode_head=dict(in_channels=_base_.convnextv2_widths['large']),
    auxiliary_head=dict(in_channels=_base_.convnextv2_widths['large'][2]))
