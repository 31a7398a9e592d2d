# Copyright (c) mmcnx2 contributors. All rights reserved.
"""What mmengine's ``FSDPStrategy`` (``runner_type='FlexibleRunner'``) needs from mmcnx2.

* :func:`convnextv2_block_wrap_policy`: the FSDP auto-wrap policy, one FSDP unit per
  ConvNeXt V2 block (backbone and FCMAE decoder); everything else (stem, downsampling layers,
  necks, heads) stays in the root unit. Registered in mmengine's root ``FUNCTIONS``:
  ``strategy.model_wrapper.auto_wrap_policy='convnextv2_block_wrap_policy'``.
* :class:`FSDPParamsMixin` and :class:`FSDPOptimWrapperConstructor`: parameter-wise
  optimizer settings that mean the same under FSDP as without it.

mmengine's ``FSDPStrategy`` wraps the model first and then builds the optimizer from the
wrapped model. With ``use_orig_params=True`` the parameters keep their identity, but between
iterations each one is a flat 1-D view of this rank's shard (often empty), and its name gains
``_fsdp_wrapped_module.`` segments. mmengine's and mmpretrain's constructors decide "no weight
decay on 1-D parameters" (``flat_decay_mult``) from ``param.ndim`` and layer-wise lr decay and
``custom_keys`` from the name, so under FSDP every weight would lose its weight decay and
``get_layer_depth`` would parse wrapper names. The mixin builds the parameter groups with the
full parameters in place (``FSDP.summon_full_params``, once, before training) and with the
wrapper segments removed from the names.
"""
from contextlib import nullcontext

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import FUNCTIONS, OPTIM_WRAPPER_CONSTRUCTORS
from torch.distributed.fsdp import FullyShardedDataParallel

from ..models.backbones.convnext_v2 import ConvNeXtV2Block

#: Module names FSDP and torch's checkpoint wrapper insert between a module and its children.
WRAPPER_SEGMENTS = ('_fsdp_wrapped_module', '_checkpoint_wrapped_module')


@FUNCTIONS.register_module()
def convnextv2_block_wrap_policy(module: nn.Module, recurse: bool, nonwrapped_numel: int,
                                 **kwargs) -> bool:
    """FSDP auto-wrap policy: one FSDP unit per :class:`ConvNeXtV2Block`.

    The blocks hold almost all parameters (huge backbone: 97 %) and each is called through its
    ``forward``, which is where FSDP gathers a unit's parameters. Necks and heads stay in the
    root unit: mmdet/mmseg call them through ``loss()``/``predict()``, which FSDP would not
    intercept.
    """
    return recurse or isinstance(module, ConvNeXtV2Block)


def unwrapped_name(name: str) -> str:
    """``name`` without FSDP / checkpoint-wrapper segments, as the unwrapped model names it.

    Works on mmengine's prefixes (``'backbone.stages.0.0._fsdp_wrapped_module'``) and
    mmpretrain's (``'backbone.stages.0.0._fsdp_wrapped_module.'``, trailing dot kept).
    """
    return '.'.join(part for part in name.split('.') if part not in WRAPPER_SEGMENTS)


class FSDPParamsMixin:
    """Makes a ``DefaultOptimWrapperConstructor`` subclass give an FSDP-wrapped model the
    parameter groups it gives the unwrapped model (see the module docstring).

    Must come before the constructor class in the bases. Without FSDP it changes nothing.
    """

    def __call__(self, model: nn.Module):
        full_params = FullyShardedDataParallel.summon_full_params(
            model, writeback=False) if isinstance(model, FullyShardedDataParallel) \
            else nullcontext()
        with full_params:
            return super().__call__(model)

    def add_params(self, params, module, prefix='', *args, **kwargs):
        # Called again for every child module: each level sees an unwrapped prefix.
        return super().add_params(params, module, unwrapped_name(prefix), *args, **kwargs)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class FSDPOptimWrapperConstructor(FSDPParamsMixin, DefaultOptimWrapperConstructor):
    """mmengine's ``DefaultOptimWrapperConstructor`` (same ``paramwise_cfg``) that also holds
    under ``FSDPStrategy``. Registered in mmengine's root registry; for layer-wise lr decay
    use ``LayerDecayOptimWrapperConstructor``, which includes the same handling."""
