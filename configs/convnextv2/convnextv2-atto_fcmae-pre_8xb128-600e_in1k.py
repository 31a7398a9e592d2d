# ConvNeXt V2-A: the recipe of the small sizes (atto, femto, pico, nano derive from here):
# 600 epochs without warmup, base lr 2e-4, wd 0.3, smoothing 0.2, no Mixup/CutMix.
_base_ = './convnextv2-tiny_fcmae-pre_8xb128-300e_in1k.py'

pretrained = 'work_dirs/fcmae_convnextv2-atto_64xb64-coslr-800e_in1k/epoch_800.pth'
model = dict(
    backbone=dict(
        arch='atto',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    head=dict(in_channels=_base_.convnextv2_widths['atto'][-1], loss=dict(label_smooth_val=0.2)),
    train_cfg=None)

base_lr = 2e-4
optim_wrapper = dict(optimizer=dict(lr=base_lr * 1024 / 256, weight_decay=0.3))
param_scheduler = [
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, convert_to_iter_based=True)
]
train_cfg = dict(max_epochs=600)
