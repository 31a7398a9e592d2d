_base_ = '../_base_/mask_rcnn_convnextv2_fpn_1x_coco.py'

# ConvNeXt V2-Atto fine-tuned on IN-1K after FCMAE, any checkpoint with a `backbone.`
# ConvNeXtV2 (FCMAE pretraining, fine-tuning), or an official checkpoint by path, URL or
# model name, converted on load, e.g.
# `--cfg-options pretrained=convnextv2-atto_fcmae-pre_3rdparty_in1k`.
# From scratch: model.backbone.init_cfg=None.
pretrained = 'work_dirs/convnextv2-atto_fcmae-pre_8xb128-600e_in1k/epoch_600.pth'

model = dict(
    backbone=dict(
        arch='atto',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=_base_.convnextv2_widths['atto']))
