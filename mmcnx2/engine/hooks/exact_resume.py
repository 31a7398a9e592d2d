# Copyright (c) mmcnx2 contributors. All rights reserved.
import random

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop

# Separate streams for loading a batch and for the training step on it.
DATA, STEP = 0, 1


def reseed(seed: int, iteration: int, stream: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs from ``(seed, iteration, stream)``."""
    value = int(np.random.SeedSequence([seed, iteration, stream]).generate_state(1)[0])
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


class _ReseedingIterator:
    """Wraps the iterator of an ``IterBasedTrainLoop``: reseeds before fetching batch n.

    The loop skips already-trained batches by fetching them again after a resume, which
    consumes the main process's RNG when ``num_workers=0``; counting fetches keeps batch n's
    augmentations a function of n only.
    """

    def __init__(self, iterator, seed: int):
        self._iterator, self._seed, self._fetched = iterator, seed, 0

    def __iter__(self):
        return self

    def __next__(self):
        reseed(self._seed, self._fetched, DATA)
        self._fetched += 1
        return next(self._iterator)


@HOOKS.register_module()
class ExactResumeHook(Hook):
    """Make a resumed run continue exactly as an uninterrupted one.

    mmengine's ``resume`` restores weights, optimizer, schedulers and the seed, but not the
    state of the global RNGs, so after a resume drop path, FCMAE masks, Mixup/CutMix and
    main-process augmentations draw different numbers. This hook instead makes every
    iteration's randomness a function of ``(runner.seed, iteration)``: it reseeds Python,
    NumPy and torch before each batch is fetched and before each training step. Nothing
    needs saving, and work between iterations (validation, logging, checkpointing) cannot
    shift the streams.

    Exact for ``IterBasedTrainLoop`` (any ``num_workers``: workers are reseeded by mmengine's
    ``worker_init_fn`` and replayed by the loop's skip) and for ``EpochBasedTrainLoop`` with
    ``num_workers=0`` or non-persistent workers. Needs a fixed ``randomness.seed`` so the
    sampler order is the same after a resume. Registered in mmengine's root ``HOOKS``:
    ``custom_hooks = [dict(type='ExactResumeHook')]`` works in every scope.
    """
    # Runs after every other hook of the same stage (e.g. after the CheckpointHook).
    priority = 'LOWEST'

    def before_train(self, runner) -> None:
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop):
            loop.dataloader_iterator = _ReseedingIterator(loop.dataloader_iterator, runner.seed)

    def before_train_epoch(self, runner) -> None:
        if not isinstance(runner.train_loop, IterBasedTrainLoop):
            reseed(runner.seed, runner.iter, DATA)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        reseed(runner.seed, runner.iter, STEP)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        # The epoch loop fetches the next batch right after this; runner.iter is still the
        # index of the finished iteration.
        if not isinstance(runner.train_loop, IterBasedTrainLoop):
            reseed(runner.seed, runner.iter + 1, DATA)
