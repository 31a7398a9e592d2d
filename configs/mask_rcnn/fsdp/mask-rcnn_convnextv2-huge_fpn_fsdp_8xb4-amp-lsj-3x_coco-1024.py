# Mask R-CNN with ConvNeXt V2-Huge
# (mask-rcnn_convnextv2-huge_fpn_8xb4-amp-lsj-3x_coco-1024.py) with FlexibleRunner + FSDP:
# parameters, gradients and AdamW state sharded over the GPUs, activation checkpointing in
# every block (with_cp, already set by the parent). See
# configs/_base_/convnextv2_fsdp_strategy.py and the README's "Scale" section.
_base_ = [
    '../mask-rcnn_convnextv2-huge_fpn_8xb4-amp-lsj-3x_coco-1024.py',
    '../../_base_/convnextv2_fsdp_strategy.py',
]

# fp16 autocast as the recipe, not FSDP's bf16 parameters: those would reach the root unit,
# i.e. the heads, where mmdet builds the proposals' anchors in the scores' dtype and decodes
# bf16 box deltas (8-bit mantissa: 4-pixel steps between 512 and 1024 px).
strategy = dict(model_wrapper=dict(mixed_precision=None))
# use_fsdp: ShardedGradScaler, so every rank skips the same overflowing steps.
optim_wrapper = dict(use_fsdp=True)
