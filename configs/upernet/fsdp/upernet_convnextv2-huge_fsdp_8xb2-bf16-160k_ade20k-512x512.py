# UperNet with ConvNeXt V2-Huge (upernet_convnextv2-huge_8xb2-amp-160k_ade20k-512x512.py) with
# FlexibleRunner + FSDP: parameters, gradients and AdamW state sharded over the GPUs, bf16
# (SyncBN in the heads stays fp32), activation checkpointing in every block. See
# configs/_base_/convnextv2_fsdp_strategy.py and the README's "Scale" section.
_base_ = [
    '../upernet_convnextv2-huge_8xb2-amp-160k_ade20k-512x512.py',
    '../../_base_/convnextv2_fsdp_strategy.py',
]

model = dict(backbone=dict(with_cp=True))
# FSDP's mixed precision replaces AMP: the parent's optimizer, layer decay and no-decay rules
# in a plain OptimWrapper (no autocast, no loss scaling) on every device.
optim_wrapper = dict(amp=False)
