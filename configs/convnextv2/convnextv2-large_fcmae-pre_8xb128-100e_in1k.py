# ConvNeXt V2-L: base's recipe with drop path 0.2.
_base_ = './convnextv2-base_fcmae-pre_8xb128-100e_in1k.py'

pretrained = 'work_dirs/fcmae_convnextv2-large_64xb64-coslr-800e_in1k/epoch_800.pth'
model = dict(
    backbone=dict(
        arch='large',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    head=dict(in_channels=_base_.convnextv2_widths['large'][-1]))
