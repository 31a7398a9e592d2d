# ConvNeXt V2 ImageNet-1K fine-tuning schedule (tiny's values; the other sizes override).
# Total batch 1024 (8 GPUs x 128). The paper's rule lr = base_lr * batch / 256 is applied
# here for 1024; for another real batch `--auto-scale-lr` multiplies by batch / 1024.
base_lr = 8e-4
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=base_lr * 1024 / 256, weight_decay=0.05, betas=(0.9, 0.999)),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        # lr scale 0.9 ** (depth from the head); 'block': one layer per block (the official
        # 'single'); base and larger switch to 'group' (12 groups).
        layer_decay_rate=0.9,
        decay_type='block',
        # No weight decay on 1-D parameters: GRN gamma/beta, LayerNorms, biases.
        flat_decay_mult=0.0))
auto_scale_lr = dict(base_batch_size=1024)

# Linear warmup then cosine to 1e-6, both updated every iteration: the official schedule,
# except that LinearLR starts at 1e-3 of the lr where the official warmup starts at 0.
warmup_epochs = 40
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, end=warmup_epochs,
         convert_to_iter_based=True),
    # `end` defaults to max_epochs.
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=warmup_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()

custom_hooks = [
    # Model EMA with decay 0.9999 (mmengine's momentum is 1 - decay); validation and the
    # saved checkpoints use the EMA weights.
    dict(type='EMAHook', momentum=1e-4, priority='ABOVE_NORMAL'),
    # Stop at a NaN/Inf loss before the diverged weights are saved (mmcnx2).
    dict(type='FiniteLossHook'),
    # Randomness per iteration from (seed, iteration): --resume continues exactly (mmcnx2).
    dict(type='ExactResumeHook'),
    # `--cfg-options pretrained=X` reaches the backbone's init_cfg with any launcher (mmcnx2).
    dict(type='RebindPretrainedHook'),
    # --resume keeps the total batch of the run (mmcnx2, README "Scale").
    dict(type='TotalBatchHook'),
]
