# The 1x base with the 3x schedule (36 epochs; 1000 iterations of linear warmup, lr x0.1 after
# epochs 27 and 33) of mmdet's ConvNeXt V1 ms-crop-3x config, which both 3x recipes use:
# *_ms-crop-3x_coco.py and *_lsj-3x_coco-1024.py change only the data.
_base_ = './mask_rcnn_convnextv2_fpn_1x_coco.py'

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1),
]
