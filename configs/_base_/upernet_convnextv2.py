# UperNet + ConvNeXt V2 for ADE20K, as in the ConvNeXt V2 paper: mmseg's UperNet-ConvNeXt
# model (auxiliary FCN head on stage 3, SyncBN), runtime and 160k schedule, with the backbone
# swapped for ConvNeXtV2 and AdamW + layer-wise lr decay + AMP. The dataset bases
# (upernet_convnextv2_ade20k-*.py) add the data; the leaves in configs/upernet/ set the
# arch, drop path, lr, decay rate and the `pretrained` checkpoint.
_base_ = [
    'mmseg::_base_/models/upernet_convnext.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
    './models/convnextv2_widths.py',
]
custom_imports = dict(
    imports=['mmcnx2', 'mmcnx2.engine.safe_checkpoint_loading'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,  # drop mmseg's ConvNeXt V1 arguments (layer_scale_init_value)
        type='ConvNeXtV2',
        arch='base',
        out_indices=(0, 1, 2, 3),
        gap_before_final_norm=False,  # one LayerNorm per output stage
        drop_path_rate=0.3),
    decode_head=dict(in_channels=_base_.convnextv2_widths['base'], num_classes=150),
    auxiliary_head=dict(in_channels=_base_.convnextv2_widths['base'][2], num_classes=150))

# Layer-wise lr decay of the ConvNeXt segmentation recipe, 'stage_wise' (ConvNeXt repo,
# semantic_segmentation/mmcv_custom/layer_decay_optimizer_constructor.py, and mmseg's
# configs/convnext/*upernet*): every downsample layer id 0, the blocks of stage i id i + 1,
# the rest (norms of the outputs, heads) id num_layers + 1; lr scale
# rate ** (num_layers + 1 - id), e.g. base: downsample layers 0.9 ** 13, stage 3 0.9 ** 9.
# num_layers 12 for sizes with 27 blocks in stage 3 (those recipes' small/base/large/xlarge);
# the atto and tiny leaves set 6 (those recipes' tiny, 9 blocks).
# flat_decay_mult=0: no weight decay on 1-D parameters (norms, biases, GRN gamma/beta): the
# recipe's rule (1-D or `.bias`) on our 1-D GRN, and ConvNeXt V2 fine-tuning's rule.
# AMP on GPUs; without one, fp32 with a logged warning (mmcnx2's AmpOrFp32OptimWrapper).
optim_wrapper = dict(
    _delete_=True,
    type='AmpOrFp32OptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        layer_decay_rate=0.9, decay_type='stage_wise', num_layers=12, flat_decay_mult=0.))

# mmseg's ConvNeXt schedule: 1500 warm-up iterations, then linear decay to 0 at 160k.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=1500, end=160000),
]

# mmcnx2 hooks: stop at a NaN/Inf loss before diverged weights are saved, make every
# iteration's randomness a function of (seed, iteration) so --resume continues exactly, and
# make `--cfg-options pretrained=X` reach the backbone's init_cfg with any launcher.
custom_hooks = [
    dict(type='FiniteLossHook'), dict(type='ExactResumeHook'), dict(type='RebindPretrainedHook'),
    dict(type='TotalBatchHook')  # --resume keeps the total batch (README "Scale")
]
randomness = dict(seed=0)

# mmseg's visualizer, also for images that are not C-contiguous (mmseg's browse_dataset.py
# passes such views, which OpenCV cannot draw on: mmcnx2's ContiguousSegLocalVisualizer).
visualizer = dict(type='ContiguousSegLocalVisualizer')

# Atomic checkpoint saves (mmcnx2's CheckpointHook; mmcnx2/engine/hooks/atomic_checkpoint.py).
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
