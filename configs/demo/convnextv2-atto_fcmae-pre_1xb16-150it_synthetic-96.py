# Demo (tools/run_demo.py), stage 2: fine-tune the FCMAE-pretrained ConvNeXt V2-Atto as a
# classifier of the synthetic world's 5 shapes. The real atto recipe with 96-pixel images,
# batch 16 and 150 iterations (plus the lr and EMA horizon such a short schedule needs);
# the synthetic ImageNet-layout set under data/imagenet (tools/run_demo.py writes it there).
_base_ = '../convnextv2/convnextv2-atto_fcmae-pre_8xb128-600e_in1k.py'

classes = ('circle', 'square', 'triangle', 'star', 'cross')  # mmcnx2.datasets.CLASSES
img_size = 96
batch_size = 16
max_iters = 150
# The recipe's 2e-4 * batch / 256 is for 600 epochs; 150 iterations need a larger step.
lr = 1e-3

# The FCMAE demo checkpoint (tools/run_demo.py passes its own with --cfg-options
# pretrained=PATH; from random initialisation: model.backbone.init_cfg=None).
pretrained = 'work_dirs/fcmae_convnextv2-atto_1xb16-200it_synthetic-96/iter_200.pth'
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    head=dict(num_classes=len(classes)))
data_preprocessor = dict(num_classes=len(classes))

# Eval resizes the short side by 256 / 224 of the crop, as the recipe's 256 -> 224.
size_overrides = dict(
    RandomResizedCrop=dict(scale=img_size),
    ResizeEdge=dict(scale=img_size * 256 // 224),
    CenterCrop=dict(crop_size=img_size))
train_pipeline = [dict(t, **size_overrides.get(t['type'], {})) for t in _base_.train_pipeline]
test_pipeline = [dict(t, **size_overrides.get(t['type'], {})) for t in _base_.test_pipeline]
train_dataloader = dict(
    batch_size=batch_size, num_workers=2, persistent_workers=True,
    dataset=dict(metainfo=dict(classes=classes), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=batch_size, num_workers=2, persistent_workers=True,
    dataset=dict(metainfo=dict(classes=classes), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(topk=(1, ))  # top-5 of 5 classes is always 100
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=False, begin=0, end=max_iters)
]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
auto_scale_lr = dict(base_batch_size=batch_size)
# EMA decay 0.9999 averages over ~10k iterations: here 0.98 keeps the last ~50.
custom_hooks = [
    dict(h, momentum=0.02) if h['type'] == 'EMAHook' else h for h in _base_.custom_hooks
]

default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
