# UperNet + ConvNeXt V2 for ADE20K, as in the ConvNeXt V2 paper: mmseg's UperNet-ConvNeXt
# model (auxiliary FCN head on stage 3, SyncBN), runtime and 160k schedule, with the backbone
# swapped for ConvNeXtV2 and AdamW + layer-wise lr decay + AMP. The dataset bases
# (upernet_convnextv2_ade20k-*.py) add the data; the leaves in configs/upernet/ set the
# arch, drop path, lr, decay rate and the `pretrained` checkpoint.
_base_ = [
    'mmseg::_base_/models/upernet_convnext.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['mmcnx2'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,  # drop mmseg's ConvNeXt V1 arguments (layer_scale_init_value)
        type='ConvNeXtV2',
        arch='base',
        out_indices=(0, 1, 2, 3),
        gap_before_final_norm=False,  # one LayerNorm per output stage
        drop_path_rate=0.3),
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))

# Layer-wise lr decay in 'group' mode: stage 3 split in blocks of three, 12 groups for
# base/large/huge (6 for atto-tiny), the grouping of the ConvNeXt segmentation recipes and of
# mmseg's ConvNeXt configs. 'block' mode (one layer per block) would give base-huge 36
# layers below the head, so a rate of 0.9 would leave the stem 0.9 ** 36 = 2% of its lr.
# flat_decay_mult=0: no weight decay on 1-D parameters (norms, biases, GRN gamma/beta).
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.9, decay_type='group', flat_decay_mult=0.))

# mmseg's ConvNeXt schedule: 1500 warm-up iterations, then linear decay to 0 at 160k.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]

# mmcnx2 hooks: stop at a NaN/Inf loss before diverged weights are saved, and make every
# iteration's randomness a function of (seed, iteration) so --resume continues exactly.
custom_hooks = [dict(type='FiniteLossHook'), dict(type='ExactResumeHook')]
randomness = dict(seed=0)
