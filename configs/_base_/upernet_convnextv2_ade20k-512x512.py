# ADE20K at crop 512 for the UperNet-ConvNeXt V2 configs: mmseg's own dataset settings
# (datasets/ade20k.py) plus
# - CheckSegMap after LoadAnnotations, so a bad label map fails naming its file;
# - the paper's multi-scale test: scales 0.75-1.25 with flip (mmseg's test.py --tta);
# - 2 images per GPU: 8 GPUs x 2 = batch 16;
# - sliding-window single-scale test, as mmseg's ConvNeXt configs.
_base_ = ['./upernet_convnextv2.py', 'mmseg::_base_/datasets/ade20k.py']

num_classes = 150
check_seg_map = dict(type='CheckSegMap', num_classes=num_classes)
# mmseg's pipelines with the check right after the step that loads the labels.
train_pipeline = [
    step for t in _base_.train_pipeline
    for step in ([t, check_seg_map] if t['type'] == 'LoadAnnotations' else [t])
]
test_pipeline = [
    step for t in _base_.test_pipeline
    for step in ([t, check_seg_map] if t['type'] == 'LoadAnnotations' else [t])
]
img_ratios = [0.75, 1.0, 1.25]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in img_ratios],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal'),
            ],
            [dict(type='LoadAnnotations')],
            [check_seg_map],
            [dict(type='PackSegInputs')],
        ]),
]
train_dataloader = dict(
    batch_size=2, dataset=dict(type='CheckedADE20KDataset', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, dataset=dict(type='CheckedADE20KDataset', pipeline=test_pipeline))
test_dataloader = val_dataloader
# The total batch the lr is written for (8 GPUs x 2): --auto-scale-lr scales from it.
auto_scale_lr = dict(enable=False, base_batch_size=16)

model = dict(
    data_preprocessor=dict(size=_base_.crop_size),
    test_cfg=dict(mode='slide', crop_size=_base_.crop_size, stride=(341, 341)))
