# The primitive FCMAE config: every other size and schedule derives from this file.
# Official recipe: effective batch 4096 (64 GPUs x 64 images, e.g. 8 nodes x 8 GPUs),
# AdamW (0.9, 0.95), wd 0.05, lr 1.5e-4 * 4096 / 256, 40 warm-up epochs then cosine to 0.
_base_ = [
    '../_base_/models/fcmae_convnextv2-base.py',
    '../_base_/datasets/fcmae_imagenet_bs64.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(
    imports=['mmcnx2', 'mmcnx2.engine.safe_checkpoint_loading'], allow_failed_imports=False)

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=1.5e-4 * 4096 / 256, betas=(0.9, 0.95), weight_decay=0.05),
    # The official pretraining's rule (main_pretrain.py: timm 0.3.2 add_weight_decay): no
    # weight decay on 1-D tensors and biases. Its GRN gamma/beta are (1, C) / (1, 1, 1, C),
    # so they are decayed; ours are 1-D, hence the explicit '.grn.' key. The mask token
    # (1, C, 1, 1) is decayed in both.
    paramwise_cfg=dict(flat_decay_mult=0., custom_keys={'.grn.': dict(decay_mult=1.)}))

max_epochs = 800
warmup_epochs = 40
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-9,  # from ~0, as the official warm-up
        by_epoch=True,
        begin=0,
        end=warmup_epochs,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        T_max=max_epochs - warmup_epochs,
        eta_min=0.,
        by_epoch=True,
        begin=warmup_epochs,
        end=max_epochs,
        convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs)
# The lr above is for a total batch of 4096; `--auto-scale-lr` rescales it to the real one.
auto_scale_lr = dict(base_batch_size=4096)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=100),
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3))
randomness = dict(seed=0, diff_rank_seed=True)
# mmcnx2 hooks: stop at a NaN/Inf loss before diverged weights are saved, and make every
# iteration's randomness a function of (seed, iteration) so --resume continues exactly.
custom_hooks = [
    dict(type='FiniteLossHook'), dict(type='ExactResumeHook'),
    dict(type='TotalBatchHook')  # --resume keeps the total batch (README "Scale")
]

# mmpretrain's runtime visualizer, without the `_scope_` key that inheriting across packages
# adds: mmpretrain's browse_dataset.py passes this dict to UniversalVisualizer(**visualizer).
visualizer = dict(
    _delete_=True, type='UniversalVisualizer', vis_backends=[dict(type='LocalVisBackend')])
