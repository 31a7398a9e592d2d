_base_ = '../_base_/mask_rcnn_convnextv2_fpn_1x_coco.py'

# ConvNeXt V2-Large fine-tuned on IN-1K after FCMAE, any checkpoint with a `backbone.`
# ConvNeXtV2 (FCMAE pretraining, fine-tuning), or an official checkpoint by path, URL or
# model name, converted on load, e.g.
# `--cfg-options pretrained=convnextv2-large_fcmae-pre_3rdparty_in1k`.
# From scratch: model.backbone.init_cfg=None.
pretrained = 'work_dirs/convnextv2-large_fcmae-pre_8xb128-100e_in1k/epoch_100.pth'

model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.4,
        with_cp=True,  # gradient checkpointing: see README "Memory"
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=_base_.convnextv2_widths['large']))
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.95))
