_base_ = '../_base_/upernet_convnextv2_ade20k-512x512.py'

# ConvNeXt V2 fine-tuned on IN-1K after FCMAE, any checkpoint of this repo with a
# `backbone.` ConvNeXtV2 (fine-tuning or FCMAE), or an official checkpoint by path, URL or
# model name, converted on load, e.g.
# `--cfg-options pretrained=convnextv2-tiny_fcmae-pre_3rdparty_in1k`.
pretrained = 'work_dirs/convnextv2-tiny_fcmae-pre_8xb128-300e_in1k/epoch_300.pth'

model = dict(
    backbone=dict(
        arch='tiny',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    decode_head=dict(in_channels=_base_.convnextv2_widths['tiny']),
    auxiliary_head=dict(in_channels=_base_.convnextv2_widths['tiny'][2]))
# Stage-wise layer decay with the recipe's num_layers for tiny (9 blocks in stage 3).
optim_wrapper = dict(paramwise_cfg=dict(num_layers=6))
