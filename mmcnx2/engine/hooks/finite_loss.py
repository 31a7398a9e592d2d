# Copyright (c) mmcnx2 contributors. All rights reserved.
import math
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..checkpoint import nonfinite_tensors


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite."""


class NonFiniteWeightsError(FloatingPointError):
    """Weights or optimizer state became NaN or infinite (e.g. from a NaN gradient under a
    finite loss) before a checkpoint was written."""


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stop training before anything non-finite is trained on or saved.

    - After every iteration: the loss must be finite.
    - Before every checkpoint is written (``before_save_checkpoint``, for regular and best
      checkpoints): every floating-point tensor of the weights and of the optimizer state
      must be finite. A NaN gradient under a finite loss (e.g. an overflow in the backward
      pass) turns the weights NaN without showing in that iteration's loss; without this
      check it would be saved and then resumed from.

    Either stop names the iteration and the last checkpoint that passed the check and was
    written completely (or that the run resumed from), so it is the one to resume from.
    Registered in mmengine's root ``HOOKS``, so mmpretrain, mmdet and mmseg configs all find
    it (``custom_hooks = [dict(type='FiniteLossHook')]``). Its loss check runs before the
    ``CheckpointHook`` (priority ``VERY_LOW``) of the same iteration.

    Raises:
        NonFiniteLossError: naming the iteration (1-based, as logged), the epoch, the
            non-finite entries of the loss dict and the last good checkpoint.
        NonFiniteWeightsError: naming the iteration, the checkpoint that was not written,
            the first non-finite tensors and the last good checkpoint.
    """
    priority = 'ABOVE_NORMAL'

    def __init__(self) -> None:
        self._last_good: Optional[str] = None
        self._being_saved: Optional[str] = None

    def before_train(self, runner) -> None:
        resumed = runner.iter > 0 or runner.epoch > 0
        # A resumed run starts from a checkpoint that was checked when it was written.
        self._last_good = runner.message_hub.get_info('last_ckpt') if resumed else None
        self._being_saved = None

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._being_saved:  # its save returned: the file is complete
            self._last_good, self._being_saved = self._being_saved, None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        if not outputs:
            return
        losses = {k: float(torch.as_tensor(v).detach().sum())
                  for k, v in outputs.items() if 'loss' in k}
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if bad:
            raise NonFiniteLossError(
                f'Non-finite loss at iteration {runner.iter + 1} (epoch {runner.epoch + 1}): '
                f'{bad}. Training stopped; the weights of this iteration were not saved. '
                + self._resume_hint())

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        bad = nonfinite_tensors(checkpoint.get('state_dict', {}), 'state_dict')
        bad += nonfinite_tensors(checkpoint.get('optimizer', {}), 'optimizer')
        saving = runner.message_hub.get_info('last_ckpt')
        if bad:
            meta = checkpoint.get('meta', {})
            raise NonFiniteWeightsError(
                f'Non-finite values in {len(bad)} tensors before saving the checkpoint of '
                f'iteration {meta.get("iter", runner.iter)} (epoch {meta.get("epoch")}): '
                f'{bad[:5]}. A NaN/Inf gradient reached the weights; training stopped and '
                f'nothing was written. {self._resume_hint()}')
        if saving:
            self._being_saved = saving

    def _resume_hint(self) -> str:
        if self._last_good:
            return f'Last good checkpoint: {self._last_good}.'
        return 'No checkpoint was saved yet.'
