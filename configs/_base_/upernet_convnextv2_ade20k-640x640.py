# ADE20K at crop 640 for the UperNet-ConvNeXt V2 configs: the 512 settings with what mmseg's
# datasets/ade20k_640x640.py changes (crop 640, resize scale 2560x640) and a sliding-window
# stride of two thirds of the crop.
_base_ = './upernet_convnextv2_ade20k-512x512.py'

crop_size = (640, 640)
scale = (2560, 640)
overrides = dict(
    RandomResize=dict(scale=scale), RandomCrop=dict(crop_size=crop_size), Resize=dict(scale=scale))
train_pipeline = [dict(t, **overrides.get(t['type'], {})) for t in _base_.train_pipeline]
test_pipeline = [dict(t, **overrides.get(t['type'], {})) for t in _base_.test_pipeline]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

model = dict(
    data_preprocessor=dict(size=crop_size),
    test_cfg=dict(crop_size=crop_size, stride=(426, 426)))
