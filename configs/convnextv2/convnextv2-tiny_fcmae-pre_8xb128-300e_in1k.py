# The primitive ImageNet-1K fine-tuning config: ConvNeXt V2-T from its FCMAE checkpoint.
# Every other size derives from this file and states only what its recipe changes:
#   atto <- tiny; femto, pico, nano <- atto; base <- tiny; large, huge <- base.
_base_ = [
    '../_base_/models/convnextv2_in1k.py',
    # RandomResizedCrop 224 (bicubic) + flip, RandAugment rand-m9-mstd0.5-inc1, random
    # erasing 0.25; eval: resize the short side to 256, center crop 224. data/imagenet.
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    '../_base_/schedules/convnextv2_finetune.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(
    imports=['mmcnx2', 'mmcnx2.engine.safe_checkpoint_loading'], allow_failed_imports=False)

# The FCMAE checkpoint this run starts from (`backbone.*` keys; the decoder is ignored).
# Override with `--cfg-options pretrained=X` (a path, URL or model name): RebindPretrainedHook
# re-binds every use of it with every launcher.
pretrained = 'work_dirs/fcmae_convnextv2-tiny_64xb64-coslr-800e_in1k/epoch_800.pth'
model = dict(
    backbone=dict(
        init_cfg=dict(type='Pretrained', checkpoint=pretrained, prefix='backbone.')))

# 8 GPUs x 128 = 1024, the batch the lr is written for.
# CheckedImageNet: mmpretrain's ImageNet whose unreadable images name their file.
train_dataloader = dict(batch_size=128, dataset=dict(type='CheckedImageNet'))
val_dataloader = dict(batch_size=128, dataset=dict(type='CheckedImageNet'))
test_dataloader = val_dataloader
# The official evaluation at 384 px and above resizes the whole image to a square (no crop):
# the test pipeline of the *_in1k-384px.py / *_in1k-512px.py evaluation configs.
square_eval_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=384, interpolation='bicubic', backend='pillow'),
    dict(type='PackInputs'),
]

# mmcnx2's checkpoint hook: atomic saves (mmcnx2/engine/hooks/atomic_checkpoint.py).
default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3))
# A fixed seed makes a resumed run repeat the uninterrupted one (with ExactResumeHook).
randomness = dict(seed=0, deterministic=False)

# mmpretrain's runtime visualizer, without the `_scope_` key that inheriting across packages
# adds: mmpretrain's browse_dataset.py passes this dict to UniversalVisualizer(**visualizer).
visualizer = dict(
    _delete_=True, type='UniversalVisualizer', vis_backends=[dict(type='LocalVisBackend')])
