# ConvNeXt V2 ImageNet-1K classifier as fine-tuned after FCMAE (tiny's values; the other
# sizes override arch, drop path, head width, smoothing and batch augments).
_base_ = './convnextv2_widths.py'

model = dict(
    type='ImageClassifier',
    backbone=dict(type='ConvNeXtV2', arch='tiny', drop_path_rate=0.2),
    # The backbone ends with global average pooling + LayerNorm (gap_before_final_norm).
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=_base_.convnextv2_widths['tiny'][-1],
        # timm's smoothing: target (1 - 0.1) * one_hot + 0.1 / 1000, also on Mixup targets.
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        # Official head_init_scale 0.001: trunc_normal(std=0.02) weights times 0.001.
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02 * 0.001, bias=0.)),
    # timm's Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5): one of the two per batch.
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]),
)
