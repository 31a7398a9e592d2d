# ConvNeXt V2-N: atto's recipe (wd 0.3, drop path 0.1) with Mixup/CutMix 0.5/0.5.
_base_ = './convnextv2-atto_fcmae-pre_8xb128-600e_in1k.py'

pretrained = 'work_dirs/fcmae_convnextv2-nano_64xb64-coslr-800e_in1k/epoch_800.pth'
model = dict(
    backbone=dict(
        arch='nano',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    head=dict(in_channels=_base_.convnextv2_widths['nano'][-1]),
    train_cfg=dict(
        _delete_=True,  # atto has no batch augments
        augments=[dict(type='Mixup', alpha=0.5), dict(type='CutMix', alpha=0.5)]))
