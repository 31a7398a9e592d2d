# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Strict loading of the checkpoint a test run evaluates (tools/test.py)."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner.checkpoint import _load_checkpoint_to_model


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's weights do not fit the model exactly (missing, unexpected or
    mis-shaped keys)."""


@HOOKS.register_module()
class StrictLoadHook(Hook):
    """Refuse a checkpoint loaded by the runner (``load_from``) that does not fit the model.

    mmengine's runner loads ``load_from`` with ``strict=False``: a checkpoint of another
    config (e.g. another ``num_classes``) only logs "size mismatch" and the run evaluates
    randomly initialised layers. tools/test.py adds this hook, so test-time loading is
    strict. The check loads the checkpoint's weights into the model with mmengine's own key
    handling (``module.`` prefixes, wrappers, TTA models) and ``strict=True``, before the
    runner's own (non-strict) load of the same weights.

    Args:
        source (str): What to name in the error, e.g. the checkpoint and the config.

    Raises:
        CheckpointMismatchError: naming ``source`` and mmengine's list of missing,
            unexpected and mis-shaped keys.
    """
    priority = 'VERY_HIGH'

    def __init__(self, source: str) -> None:
        self.source = source

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        try:
            _load_checkpoint_to_model(model, checkpoint, strict=True)
        except RuntimeError as err:
            raise CheckpointMismatchError(
                f'{self.source}: the checkpoint does not fit the model; it is loaded strictly '
                'for testing, since the unmatched layers would be evaluated with random '
                f'weights. {err}') from None
