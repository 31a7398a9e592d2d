# Mask R-CNN + FPN with a ConvNeXt V2 backbone on COCO, 1x schedule: mmdet's own Mask R-CNN
# R50-FPN config (model, COCO instance data, 1x schedule, runtime) with the backbone swapped
# for ConvNeXtV2 and SGD swapped for the ConvNeXt detection recipe (AdamW + layer-wise lr
# decay + AMP). The *_3x base changes the schedule, the *_ms-crop-3x and *_lsj-3x bases on it
# the data; the leaves in configs/mask_rcnn/ set the arch, drop path, decay rate and the
# `pretrained` checkpoint (and the neck's widths, from _base_/models/convnextv2_widths.py).
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', './models/convnextv2_widths.py']
custom_imports = dict(
    imports=['mmcnx2', 'mmcnx2.engine.safe_checkpoint_loading'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,  # drop mmdet's ResNet arguments
        type='ConvNeXtV2',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        gap_before_final_norm=False,  # one LayerNorm per output stage for the FPN
        drop_path_rate=0.2),
    neck=dict(in_channels=_base_.convnextv2_widths['tiny']),
    # ConvNeXtV2's features follow the caller's memory layout, but a channels_last input (or
    # FPN output) would reach mmcv's RoIAlign kernels (CPU and CUDA), which read it as if it
    # were NCHW-contiguous: the RoI features come out scrambled (open-mmlab/mmcv#2203), and the
    # boxes still train through the RPN but classes and masks do not. torchvision's roi_align
    # honours any memory layout.
    roi_head=dict(
        bbox_roi_extractor=dict(roi_layer=dict(use_torchvision=True)),
        mask_roi_extractor=dict(roi_layer=dict(use_torchvision=True))))

# Same data as mmdet's, loaded by a CocoDataset that names the file of a missing image or a
# broken annotation when the dataset is built, instead of failing later inside a transform.
train_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
val_dataloader = dict(dataset=dict(type='CheckedCocoDataset'))
test_dataloader = val_dataloader

# AdamW lr 1e-4 at batch 16, wd 0.05 (mmdet's ConvNeXt recipe). Layer decay in 'group' mode
# (6 groups for atto..tiny, 12 for base..huge, stage 3 in blocks of three);
# flat_decay_mult=0: no weight decay on 1-D parameters (norms, biases, GRN gamma/beta).
# AMP on GPUs; without one, fp32 with a logged warning (mmcnx2's AmpOrFp32OptimWrapper).
optim_wrapper = dict(
    _delete_=True,
    type='AmpOrFp32OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.9, decay_type='group', flat_decay_mult=0.))

# mmcnx2 hooks: stop at a NaN/Inf loss before diverged weights are saved, make every
# iteration's randomness a function of (seed, iteration) so --resume continues exactly, and
# make `--cfg-options pretrained=X` reach the backbone's init_cfg with any launcher.
custom_hooks = [
    dict(type='FiniteLossHook'), dict(type='ExactResumeHook'), dict(type='RebindPretrainedHook'),
    dict(type='TotalBatchHook')  # --resume keeps the total batch (README "Scale")
]
randomness = dict(seed=0)

# Atomic checkpoint saves (mmcnx2's CheckpointHook; mmcnx2/engine/hooks/atomic_checkpoint.py).
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
