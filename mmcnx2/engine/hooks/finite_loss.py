# Copyright (c) mmcnx2 contributors. All rights reserved.
import math

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite."""


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stop training at the first iteration whose loss is NaN or infinite.

    Registered in mmengine's root ``HOOKS``, so mmpretrain, mmdet and mmseg configs all find
    it (``custom_hooks = [dict(type='FiniteLossHook')]``). It runs before the
    ``CheckpointHook`` (priority ``VERY_LOW``), so the diverged weights are never saved and
    the last checkpoint in ``work_dir`` is the last good one.

    Raises:
        NonFiniteLossError: naming the iteration (1-based, as logged), the epoch, the
            non-finite entries of the loss dict and the last saved checkpoint.
    """
    priority = 'ABOVE_NORMAL'

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if not outputs:
            return
        losses = {k: float(torch.as_tensor(v).detach().sum())
                  for k, v in outputs.items() if 'loss' in k}
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if bad:
            last = runner.message_hub.get_info('last_ckpt')
            raise NonFiniteLossError(
                f'Non-finite loss at iteration {runner.iter + 1} (epoch {runner.epoch + 1}): '
                f'{bad}. Training stopped; the weights of this iteration were not saved. '
                + (f'Last good checkpoint: {last}.' if last else 'No checkpoint was saved yet.'))
