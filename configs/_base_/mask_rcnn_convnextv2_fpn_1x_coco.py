# Mask R-CNN + FPN with a ConvNeXt V2 backbone on COCO, 1x schedule: mmdet's own Mask R-CNN
# R50-FPN config (model, COCO instance data, 1x schedule, runtime) with the backbone swapped
# for ConvNeXtV2 and SGD swapped for the ConvNeXt detection recipe (AdamW + layer-wise lr
# decay + AMP). The *_ms-crop-3x and *_lsj-3x bases change data and schedule; the leaves in
# configs/mask_rcnn/ set the arch, drop path, decay rate and the `pretrained` checkpoint.
_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmcnx2'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,  # drop mmdet's ResNet arguments
        type='ConvNeXtV2',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        gap_before_final_norm=False,  # one LayerNorm per output stage for the FPN
        drop_path_rate=0.2),
    neck=dict(in_channels=[96, 192, 384, 768]),
    # ConvNeXtV2's features (and so the FPN's) are channels_last in memory, which mmcv's
    # RoIAlign kernels (CPU and CUDA) read as if they were NCHW-contiguous: the RoI features
    # come out scrambled (open-mmlab/mmcv#2203), and the boxes still train through the RPN
    # but classes and masks do not. torchvision's roi_align honours any memory layout.
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
# Without a GPU, train with --cfg-options optim_wrapper.type=OptimWrapper (mmengine's AMP
# wrapper needs CUDA).
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.9, decay_type='group', flat_decay_mult=0.))

# mmcnx2 hooks: stop at a NaN/Inf loss before diverged weights are saved, and make every
# iteration's randomness a function of (seed, iteration) so --resume continues exactly.
custom_hooks = [dict(type='FiniteLossHook'), dict(type='ExactResumeHook')]
randomness = dict(seed=0)
