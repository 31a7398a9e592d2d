# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Keep the total batch of a run when it resumes on another number of processes."""
from typing import Dict, Optional

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

#: Key of the checkpoint's ``meta`` that holds :meth:`TotalBatchHook.batch_of`.
META_KEY = 'total_batch'


def _processes(count: int) -> str:
    return f'{count} process' + ('' if count == 1 else 'es')


class TotalBatchMismatchError(RuntimeError):
    """A run would be resumed with another total batch than it was trained with."""


@HOOKS.register_module()
class TotalBatchHook(Hook):
    """Resume only with the total batch a run was trained with.

    The recipes' lr, warm-up and schedule are set for a total batch (FCMAE: 4096 = 64 GPUs x
    64), and mmengine's ``--resume`` restores the optimizer's lr, the scheduler and the
    iteration whatever the number of processes now is: resumed on fewer processes, a run
    would silently continue with a smaller batch. This hook writes the run's batch into every
    checkpoint's ``meta['total_batch']`` as plain integers (``world_size``, ``batch_size`` per
    process, ``accumulative_counts``) and, when a run resumes mid-training, refuses to go on
    if the images per iteration (``world_size x batch_size``) or the iterations per update
    (``accumulative_counts``) changed, saying which ``--cfg-options`` keep them.

    Checkpoints without the record (older ones) resume as before. Registered in mmengine's
    root ``HOOKS``: ``custom_hooks = [dict(type='TotalBatchHook')]`` works in every scope,
    with ``Runner`` and ``FlexibleRunner``.

    Raises:
        TotalBatchMismatchError: at ``before_train`` of a resumed run whose batch differs,
            naming both batches and the settings that restore the recorded one.
    """
    priority = 'VERY_HIGH'  # refuse before any other hook starts work

    def __init__(self):
        self._recorded: Optional[Dict[str, int]] = None

    @staticmethod
    def batch_of(runner) -> Dict[str, int]:
        """The batch ``runner`` trains with: world size, per-process batch, accumulation."""
        loader = runner.train_dataloader
        # mmdet's AspectRatioBatchSampler: the DataLoader has a batch sampler, no batch_size.
        batch_size = loader.batch_size or loader.batch_sampler.batch_size
        return dict(
            world_size=int(runner.world_size),
            batch_size=int(batch_size),
            accumulative_counts=int(getattr(runner.optim_wrapper, '_accumulative_counts', 1)))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint.setdefault('meta', {})[META_KEY] = self.batch_of(runner)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        self._recorded = checkpoint.get('meta', {}).get(META_KEY)

    def before_train(self, runner) -> None:
        # Weights loaded with load_from (a new run) start at iteration 0: only a resume
        # continues a schedule.
        if self._recorded is None or runner.iter == 0:
            return
        saved, now = self._recorded, self.batch_of(runner)
        saved_total = saved['world_size'] * saved['batch_size']
        now_total = now['world_size'] * now['batch_size']
        problems, fixes = [], []
        if saved_total != now_total:
            problems.append(
                f'{saved_total} images per iteration ({_processes(saved["world_size"])} x '
                f'{saved["batch_size"]}) when it was saved, {now_total} now '
                f'({_processes(now["world_size"])} x {now["batch_size"]})')
            same_total = [f'{_processes(saved["world_size"])} with '
                          f'train_dataloader.batch_size={saved["batch_size"]}']
            if saved_total % now['world_size'] == 0:
                same_total.insert(0, f'train_dataloader.batch_size='
                                  f'{saved_total // now["world_size"]} on '
                                  f'{_processes(now["world_size"])}')
            fixes.append(' or '.join(same_total))
        if saved['accumulative_counts'] != now['accumulative_counts']:
            problems.append(
                f'optim_wrapper.accumulative_counts={saved["accumulative_counts"]} when it was'
                f' saved, {now["accumulative_counts"]} now')
            fixes.append(f'optim_wrapper.accumulative_counts={saved["accumulative_counts"]}')
        if problems:
            raise TotalBatchMismatchError(
                f'Cannot resume at iteration {runner.iter} with another total batch: '
                + '; '.join(problems) + '. The lr, schedule and optimizer state continue '
                'from the checkpoint and were set for its batch. Resume with '
                + ', and '.join(fixes) + ' (--cfg-options). To change the batch on purpose, '
                'start a new run from the weights (--cfg-options load_from=CHECKPOINT, '
                'without --resume).')
