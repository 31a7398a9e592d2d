# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Mixed precision where mmengine can run it, fp32 elsewhere: one config for GPU and CPU."""
import logging

from mmengine import device
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

#: Arguments only AmpOptimWrapper takes; the fp32 fallback drops them.
AMP_ONLY_ARGS = ('loss_scale', 'dtype', 'use_fsdp')


def amp_available() -> bool:
    """mmengine's own condition for ``AmpOptimWrapper``: a CUDA, NPU, MLU or MUSA device."""
    return any(
        getattr(device, f'is_{kind}_available', lambda: False)()
        for kind in ('cuda', 'npu', 'mlu', 'musa'))


@OPTIM_WRAPPERS.register_module(name='AmpOrFp32OptimWrapper')
def amp_or_fp32_optim_wrapper(amp: bool = True, **kwargs) -> OptimWrapper:
    """mmengine's ``AmpOptimWrapper`` where it can run, else a plain fp32 ``OptimWrapper``.

    The Mask R-CNN and UperNet configs train with AMP on GPUs, as the paper; with this type
    (registered in mmengine's root ``OPTIM_WRAPPERS``, so every scope finds it) the same
    config also trains on a machine without an accelerator, with every launcher (our tools,
    ``mim train``, mmdet's/mmseg's ``tools/train.py``), where ``AmpOptimWrapper`` itself
    would stop with "only available training on gpu, npu, mlu or musa". The fallback is
    logged as a warning, and drops the AMP-only arguments (:data:`AMP_ONLY_ARGS`).

    Args:
        amp (bool): False builds the plain ``OptimWrapper`` on every device, for configs whose
            precision is set elsewhere (FSDP's ``mixed_precision``), so that they keep the
            parent config's optimizer and layer decay with one changed key. Defaults to True.
        **kwargs: What ``AmpOptimWrapper`` takes: ``optimizer``, ``loss_scale``, ``dtype``,
            ``accumulative_counts``, ``clip_grad``...

    Returns:
        OptimWrapper: an ``AmpOptimWrapper``, or an ``OptimWrapper`` without an accelerator.
    """
    if amp and amp_available():
        return AmpOptimWrapper(**kwargs)
    dropped = {k: kwargs.pop(k) for k in AMP_ONLY_ARGS if k in kwargs}
    if not amp:
        return OptimWrapper(**kwargs)
    print_log(
        'AmpOrFp32OptimWrapper: no CUDA, NPU, MLU or MUSA device, so no mixed precision: '
        f'training in fp32 with OptimWrapper (ignoring {dropped})',
        logger='current',
        level=logging.WARNING)
    return OptimWrapper(**kwargs)
