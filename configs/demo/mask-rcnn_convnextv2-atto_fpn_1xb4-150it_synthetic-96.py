# Demo (tools/run_demo.py), stage 3: Mask R-CNN + FPN with the fine-tuned ConvNeXt V2-Atto
# on the synthetic world's COCO-layout scenes (5 shape classes, instance masks). The real
# 1x config with 96-pixel images, batch 4 and 150 iterations (the 1x schedule's warm-up and
# steps at 8/12 and 11/12 of the run, scaled to it), fp32 on CPU, data under data/coco.
_base_ = '../mask_rcnn/mask-rcnn_convnextv2-atto_fpn_8xb2-amp-1x_coco.py'

classes = ('circle', 'square', 'triangle', 'star', 'cross')  # mmcnx2.datasets.CLASSES
palette = [(220, 50, 40), (40, 90, 220), (40, 170, 60), (235, 200, 30), (170, 50, 200)]
img_size = 96
batch_size = 4
max_iters = 150
# The recipe's 1e-4 is for batch 16 and 90k iterations; 150 iterations need a larger step.
lr = 4e-4

# The fine-tuned demo classifier (tools/run_demo.py passes its own with --cfg-options
# pretrained=PATH; from random initialisation: model.backbone.init_cfg=None).
pretrained = 'work_dirs/convnextv2-atto_fcmae-pre_1xb16-150it_synthetic-96/iter_150.pth'
# FPN and heads at a quarter of their width (256 -> 64 channels, box head fc 1024 -> 256):
# at full width they cost many times the atto backbone on a CPU.
width = 64
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        bbox_head=dict(in_channels=width, fc_out_channels=256, num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=width),
        mask_head=dict(in_channels=width, conv_out_channels=width, num_classes=len(classes))),
    # A 96-pixel image holds at most 4 objects: a tenth of COCO's proposals, RoIs and
    # detections per image (the mask head on 100 detections would dominate CPU time).
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=200, max_per_img=100), rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(rpn=dict(nms_pre=100, max_per_img=100), rcnn=dict(max_per_img=10)))

size_overrides = dict(Resize=dict(scale=(img_size, img_size)))
train_pipeline = [dict(t, **size_overrides.get(t['type'], {})) for t in _base_.train_pipeline]
test_pipeline = [dict(t, **size_overrides.get(t['type'], {})) for t in _base_.test_pipeline]
metainfo = dict(classes=classes, palette=palette)
train_dataloader = dict(
    batch_size=batch_size, dataset=dict(metainfo=metainfo, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(metainfo=metainfo, pipeline=test_pipeline))
test_dataloader = val_dataloader

# The real config's AmpOrFp32OptimWrapper: AMP on a GPU, plain fp32 on a CPU.
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=max_iters // 10),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[max_iters * 8 // 12, max_iters * 11 // 12], gamma=0.1),
]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
auto_scale_lr = dict(base_batch_size=batch_size)

default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
