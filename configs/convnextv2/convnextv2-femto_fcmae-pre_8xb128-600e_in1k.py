# ConvNeXt V2-F: atto's recipe with wd 0.05, no drop path and Mixup/CutMix 0.3/0.3.
_base_ = './convnextv2-atto_fcmae-pre_8xb128-600e_in1k.py'

pretrained = 'work_dirs/fcmae_convnextv2-femto_64xb64-coslr-800e_in1k/epoch_800.pth'
model = dict(
    backbone=dict(
        arch='femto',
        drop_path_rate=0.0,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    head=dict(in_channels=_base_.convnextv2_widths['femto'][-1]),
    train_cfg=dict(
        _delete_=True,  # atto has no batch augments
        augments=[dict(type='Mixup', alpha=0.3), dict(type='CutMix', alpha=0.3)]))

optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
