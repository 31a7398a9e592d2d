# The ConvNeXt V2 paper's COCO recipe: large-scale jitter (scale 0.1-2.0, 1024x1024 crops),
# batch 32 (8 GPUs x 4), AdamW lr 1e-4, 3x schedule (36 epochs), single-scale test at 1024
# with soft-NMS. The LSJ pipeline is the one of mmdet::common/lsj-100e_coco-instance.py,
# restated because that file also defines data loaders and schedules of its own.
_base_ = './mask_rcnn_convnextv2_fpn_3x_coco.py'

image_size = (1024, 1024)
model = dict(
    # LSJ crops are padded to one fixed size, as in mmdet's LSJ Mask R-CNN baselines.
    data_preprocessor=dict(
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    test_cfg=dict(rcnn=dict(nms=dict(type='soft_nms', iou_threshold=0.5, min_score=0.05))))

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(
        type='RandomCrop',
        crop_type='absolute_range',
        crop_size=image_size,
        recompute_bbox=True,
        allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args={{_base_.backend_args}}),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=4, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

train_cfg = dict(val_interval=3)
auto_scale_lr = dict(base_batch_size=32)
