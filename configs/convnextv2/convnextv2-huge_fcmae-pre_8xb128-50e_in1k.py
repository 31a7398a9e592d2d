# ConvNeXt V2-H: base's recipe shortened to 50 epochs with 10 warmup, base lr 1.25e-3,
# layer decay 0.75 (12 groups), drop path 0.3.
_base_ = './convnextv2-base_fcmae-pre_8xb128-100e_in1k.py'

pretrained = 'work_dirs/fcmae_convnextv2-huge_64xb64-coslr-800e_in1k/epoch_800.pth'
model = dict(
    backbone=dict(
        arch='huge',
        drop_path_rate=0.3,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    head=dict(in_channels=_base_.convnextv2_widths['huge'][-1]))

base_lr = 1.25e-3
optim_wrapper = dict(
    optimizer=dict(lr=base_lr * 1024 / 256), paramwise_cfg=dict(layer_decay_rate=0.75))
warmup_epochs = 10
# The schedule of _base_/schedules/convnextv2_finetune.py with this warmup.
param_scheduler = [
    dict(_base_.param_scheduler[0], end=warmup_epochs),
    dict(_base_.param_scheduler[1], begin=warmup_epochs),
]
train_cfg = dict(max_epochs=50)
