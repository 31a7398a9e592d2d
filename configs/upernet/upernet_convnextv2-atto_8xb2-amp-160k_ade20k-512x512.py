_base_ = '../_base_/upernet_convnextv2_ade20k-512x512.py'

# ConvNeXt V2 fine-tuned on IN-1K after FCMAE, any checkpoint of this repo with a
# `backbone.` ConvNeXtV2 (fine-tuning or FCMAE), or an official checkpoint by path, URL or
# model name, converted on load, e.g.
# `--cfg-options pretrained=convnextv2-atto_fcmae-pre_3rdparty_in1k`.
pretrained = 'work_dirs/convnextv2-atto_fcmae-pre_8xb128-600e_in1k/epoch_600.pth'

model = dict(
    backbone=dict(
        arch='atto',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    decode_head=dict(in_channels=_base_.convnextv2_widths['atto']),
    auxiliary_head=dict(in_channels=_base_.convnextv2_widths['atto'][2]))
# A small model takes a larger lr (the paper's range is 1e-4 to 3e-4).
# Stage-wise layer decay with the recipe's num_layers for 9 or fewer blocks in stage 3.
optim_wrapper = dict(optimizer=dict(lr=2e-4), paramwise_cfg=dict(num_layers=6))
