# Demo (tools/run_demo.py), stage 4: UperNet with the fine-tuned ConvNeXt V2-Atto on the
# synthetic world's ADE20K-layout scenes. The real config with 96-pixel crops, batch 4 and
# 150 iterations (warm-up then linear decay, as the 160k schedule, scaled to the run), fp32
# on CPU, data under data/ade/ADEChallengeData2016. Unlike ADE20K, label 0 (background) is
# a class here rather than ignored, so predictions can be drawn on whole images.
_base_ = '../upernet/upernet_convnextv2-atto_8xb2-amp-160k_ade20k-512x512.py'

classes = ('background', 'circle', 'square', 'triangle', 'star', 'cross')
palette = [(0, 0, 0), (220, 50, 40), (40, 90, 220), (40, 170, 60), (235, 200, 30),
           (170, 50, 200)]
num_classes = len(classes)
img_size = 96
crop_size = (img_size, img_size)
batch_size = 4
max_iters = 150
# The recipe's 2e-4 is for batch 16 and 160k iterations; 150 iterations need a larger step.
lr = 6e-4

# The fine-tuned demo classifier (tools/run_demo.py passes its own with --cfg-options
# pretrained=PATH; from random initialisation: model.backbone.init_cfg=None).
pretrained = 'work_dirs/convnextv2-atto_fcmae-pre_1xb16-150it_synthetic-96/iter_150.pth'
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    # A quarter of the heads' width (512 and 256): at full width the decode head's 3x3
    # convolutions cost ~15x the atto backbone.
    decode_head=dict(channels=128, num_classes=num_classes),
    auxiliary_head=dict(channels=64, num_classes=num_classes),
    # a test image is one crop
    test_cfg=dict(_delete_=True, mode='whole'))

# ADE20K's pipeline (random ratio 0.5-2) with a (384, 96) scale and a 96 crop instead of its
# (2048, 512) and 512, for the 96 px images.
size_overrides = dict(
    LoadAnnotations=dict(reduce_zero_label=False),
    RandomResize=dict(scale=(img_size * 4, img_size)),
    Resize=dict(scale=(img_size * 4, img_size)),
    RandomCrop=dict(crop_size=crop_size),
    CheckSegMap=dict(num_classes=num_classes))
train_pipeline = [dict(t, **size_overrides.get(t['type'], {})) for t in _base_.train_pipeline]
test_pipeline = [dict(t, **size_overrides.get(t['type'], {})) for t in _base_.test_pipeline]
# ADE20KDataset only accepts subsets of ADE20K's 150 classes: the generic dataset instead.
seg_dataset = dict(
    type='CheckedBaseSegDataset',
    metainfo=dict(classes=classes, palette=palette),
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=False)
train_dataloader = dict(
    batch_size=batch_size, num_workers=2, dataset=dict(pipeline=train_pipeline, **seg_dataset))
val_dataloader = dict(num_workers=2, dataset=dict(pipeline=test_pipeline, **seg_dataset))
test_dataloader = val_dataloader

# The real config's AmpOrFp32OptimWrapper: AMP on a GPU, plain fp32 on a CPU.
optim_wrapper = dict(optimizer=dict(lr=lr))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=max_iters // 20),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=max_iters // 20,
         end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
auto_scale_lr = dict(base_batch_size=batch_size)

default_hooks = dict(
    logger=dict(interval=10),
    checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
