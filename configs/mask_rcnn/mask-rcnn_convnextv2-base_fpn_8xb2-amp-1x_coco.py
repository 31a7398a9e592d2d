_base_ = '../_base_/mask_rcnn_convnextv2_fpn_1x_coco.py'

# ConvNeXt V2-Base fine-tuned on IN-1K after FCMAE, any checkpoint with a `backbone.`
# ConvNeXtV2 (FCMAE pretraining, fine-tuning), or an official checkpoint by path, URL or
# model name, converted on load, e.g.
# `--cfg-options pretrained=convnextv2-base_fcmae-pre_3rdparty_in1k`.
# From scratch: model.backbone.init_cfg=None.
pretrained = 'work_dirs/convnextv2-base_fcmae-pre_8xb128-100e_in1k/epoch_100.pth'

model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=_base_.convnextv2_widths['base']))
