# FCMAE pretraining of ConvNeXt V2-Huge (1600 epochs, total batch 4096) with FlexibleRunner +
# FSDP: parameters, gradients and AdamW state sharded over the GPUs, bf16, activation
# checkpointing in every block. Same recipe as the parent config; see
# configs/_base_/convnextv2_fsdp_strategy.py and the README's "Scale" section.
_base_ = [
    '../fcmae_convnextv2-huge_64xb64-coslr-1600e_in1k.py',
    '../../_base_/convnextv2_fsdp_strategy.py',
]

model = dict(backbone=dict(with_cp=True))
# mmengine's DefaultOptimWrapperConstructor (same paramwise_cfg) made FSDP-aware: without it
# every sharded (1-D) weight would fall under flat_decay_mult=0.
optim_wrapper = dict(constructor='FSDPOptimWrapperConstructor')
