# ConvNeXt V2-B: the recipe of the large sizes (large and huge derive from here): 100 epochs
# with 20 warmup, base lr 6.25e-4, layer decay 0.6 over 12 groups, drop path 0.1.
_base_ = './convnextv2-tiny_fcmae-pre_8xb128-300e_in1k.py'

pretrained = 'work_dirs/fcmae_convnextv2-base_64xb64-coslr-800e_in1k/epoch_800.pth'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    head=dict(in_channels=_base_.convnextv2_widths['base'][-1]))

base_lr = 6.25e-4
optim_wrapper = dict(
    optimizer=dict(lr=base_lr * 1024 / 256),
    paramwise_cfg=dict(layer_decay_rate=0.6, decay_type='group'))
warmup_epochs = 20
# The schedule of _base_/schedules/convnextv2_finetune.py with this warmup.
param_scheduler = [
    dict(_base_.param_scheduler[0], end=warmup_epochs),
    dict(_base_.param_scheduler[1], begin=warmup_epochs),
]
train_cfg = dict(max_epochs=100)
