# mmengine's FlexibleRunner with FSDPStrategy, for the huge configs in configs/*/fsdp/.
# - One FSDP unit per ConvNeXt V2 block (mmcnx2's `convnextv2_block_wrap_policy`, backbone and
#   FCMAE decoder); stem, downsampling layers, necks and heads share the root unit.
# - use_orig_params=True keeps every parameter's identity and name, so layer-wise lr decay
#   and the no-decay rules (1-D: norms, biases, GRN gamma/beta) hold: mmcnx2's constructors
#   build the groups from the full parameters (mmcnx2/engine/fsdp.py).
# - bf16 parameters and activations, fp32 gradient reduction; BatchNorm (UperNet's heads)
#   stays fp32 (FSDP's default for _BatchNorm).
# - Full (unsharded) checkpoints written by rank 0: the same files as DDP runs, so the chain
#   (`pretrained`) and tools/test.py work unchanged, and so does resuming on another number of
#   GPUs with the same total batch (TotalBatchHook refuses another; README "Scale").
# Activation checkpointing is the backbone's own `with_cp` (set by the FCMAE and UperNet leaves
# in configs/*/fsdp/; the Mask R-CNN huge parents already set it).
runner_type = 'FlexibleRunner'
strategy = dict(
    type='FSDPStrategy',
    model_wrapper=dict(
        auto_wrap_policy='convnextv2_block_wrap_policy',
        use_orig_params=True,
        mixed_precision=dict(
            param_dtype='bfloat16', reduce_dtype='float32', buffer_dtype='float32')),
    state_dict_cfg='full')
