# Copyright (c) mmcnx2 contributors. All rights reserved.
"""An mmengine Runner on a three-parameter model: a training takes about a second, for the
checkpointing, resume and NaN tests (tests/test_reliability.py, tests/test_attacks.py)."""
import uuid

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset


class ToyModel(BaseModel):
    """y = w x + b on two inputs, with a squared loss."""

    def __init__(self, out_features: int = 1):
        super().__init__()
        self.linear = nn.Linear(2, out_features)

    def forward(self, inputs, labels, mode='tensor'):
        outputs = self.linear(inputs)
        if mode == 'loss':
            return dict(loss=((outputs - labels)**2).mean())
        return outputs


class ToyData(Dataset):
    """Eight fixed samples."""

    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.inputs = torch.randn(8, 2, generator=generator)
        self.labels = self.inputs.sum(1, keepdim=True)

    def __len__(self):
        return len(self.inputs)

    def __getitem__(self, index):
        return dict(inputs=self.inputs[index], labels=self.labels[index])


class NaNGradientAt(Hook):
    """Turns the gradient of the weight NaN in iteration ``at`` (1-based) while the loss stays
    finite, as an overflow in a backward pass does."""

    def __init__(self, at: int):
        self.at, self._handle = at, None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at:
            weight = runner.model.linear.weight
            self._handle = weight.register_hook(lambda grad: torch.full_like(grad, float('nan')))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def toy_runner(work_dir: str, max_iters: int = 4, interval: int = 1, max_keep_ckpts: int = 1,
               hooks=(), checkpoint_hook: str = 'AtomicCheckpointHook', **runner_args) -> Runner:
    """An iteration-based run saving every ``interval`` iterations, with mmcnx2's
    ``FiniteLossHook`` and the given extra hooks."""
    from mmcnx2.engine import FiniteLossHook
    return Runner(
        model=ToyModel(),
        work_dir=work_dir,
        train_dataloader=dict(
            dataset=ToyData(), batch_size=2, collate_fn=dict(type='default_collate'),
            sampler=dict(type='DefaultSampler', shuffle=False)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(
            logger=dict(type='LoggerHook', interval=1),
            checkpoint=dict(type=checkpoint_hook, interval=interval, by_epoch=False,
                            max_keep_ckpts=max_keep_ckpts)),
        custom_hooks=[FiniteLossHook(), *hooks],
        default_scope='mmengine',
        experiment_name=f'toy_{uuid.uuid4().hex}',
        **runner_args)
