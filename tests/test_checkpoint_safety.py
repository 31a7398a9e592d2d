# Copyright (c) mmcnx2 contributors. All rights reserved.
"""mmengine checkpoints load with ``weights_only=True``; crafted pickles are refused."""
import os
import os.path as osp
import pickle

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmengine.runner import Runner, load_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint
from mmpretrain.models import ImageClassifier

from mmcnx2.datasets import CLASSES, PALETTE, make_synthetic_world
from mmcnx2.engine import SAFE_GLOBALS, UnsafeCheckpointError

TINY = dict(depths=[1, 1, 1, 1], channels=[8, 16, 32, 64])


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    """Build in mmpretrain's scope whatever scope an earlier test's runner left behind."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


def _runner_cfg(data_root: str, work_dir: str, by_epoch: bool) -> Config:
    """A seeded mmpretrain classifier run: EMA, save_best, layer decay, palette metadata."""
    pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]

    def loader(split):
        return dict(
            batch_size=4, num_workers=0,
            dataset=dict(type='CustomDataset', data_root=data_root, ann_file=f'meta/{split}.txt',
                         data_prefix=split, pipeline=pipeline,
                         metainfo=dict(classes=CLASSES, palette=[list(c) for c in PALETTE])),
            sampler=dict(type='DefaultSampler', shuffle=split == 'train'))

    loop = dict(by_epoch=True, max_epochs=2) if by_epoch else dict(by_epoch=False, max_iters=6,
                                                                   val_interval=3)
    return Config(dict(
        default_scope='mmpretrain',
        model=dict(
            type='ImageClassifier',
            data_preprocessor=dict(num_classes=5, mean=[128] * 3, std=[64] * 3),
            backbone=dict(type='ConvNeXtV2', arch=TINY, drop_path_rate=0.1),
            head=dict(type='LinearClsHead', num_classes=5, in_channels=64)),
        work_dir=work_dir,
        train_dataloader=loader('train'), val_dataloader=loader('val'),
        val_evaluator=dict(type='Accuracy', topk=(1, )),
        train_cfg=loop, val_cfg=dict(),
        optim_wrapper=dict(
            optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
            constructor='LayerDecayOptimWrapperConstructor',
            paramwise_cfg=dict(layer_decay_rate=0.9, decay_type='block', flat_decay_mult=0.)),
        param_scheduler=[dict(type='CosineAnnealingLR', by_epoch=by_epoch)],
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=1 if by_epoch else 3,
                            by_epoch=by_epoch, save_best='auto'),
            logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='EMAHook', momentum=1e-2)],
        randomness=dict(seed=0)))


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """Checkpoints of an epoch-based and an iteration-based training (mmengine Runner)."""
    root = str(tmp_path_factory.mktemp('ckpt'))
    data = make_synthetic_world(root, num_train=12, num_val=4, image_size=32,
                                layouts=('imagenet', ))['imagenet']
    paths = []
    for by_epoch in (True, False):
        work_dir = osp.join(root, f'work_{by_epoch}')
        Runner.from_cfg(_runner_cfg(data, work_dir, by_epoch)).train()
        paths += sorted(osp.join(work_dir, f) for f in os.listdir(work_dir)
                        if f.endswith('.pth'))
    assert len(paths) >= 4  # epoch_1, epoch_2, iter_3, iter_6 and the best ones
    return paths


def _load_all(paths):
    for path in paths:
        ckpt = torch.load(path, weights_only=True)
        assert {'meta', 'state_dict', 'message_hub'} <= set(ckpt)


def test_training_checkpoints_load_weights_only(checkpoints):
    _load_all(checkpoints)
    ckpt = torch.load(checkpoints[0], weights_only=True)
    # What made torch>=2.6 refuse them: HistoryBuffers with NumPy arrays, NumPy scalars.
    buffer = ckpt['message_hub']['log_scalars']['train/loss']
    assert type(buffer).__name__ == 'HistoryBuffer' and buffer.mean() > 0
    assert buffer.statistics('max') >= buffer.statistics('min')
    assert isinstance(ckpt['message_hub']['runtime_info']['eta'], np.floating)
    assert ckpt['meta']['dataset_meta']['palette'][0] == list(PALETTE[0])


def test_allow_list_is_exactly_what_checkpoints_need(checkpoints):
    """Each allowed global (NumPy-1 aliases aside) is needed by some checkpoint."""
    saved = torch.serialization.get_safe_globals()
    needed = [g for g in SAFE_GLOBALS if not (isinstance(g, tuple) and 'numpy.core.' in g[1])]
    try:
        for left_out in needed:
            torch.serialization.clear_safe_globals()
            torch.serialization.add_safe_globals([g for g in needed if g is not left_out])
            with pytest.raises(pickle.UnpicklingError):
                _load_all(checkpoints)
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(saved)
    _load_all(checkpoints)


def test_load_from_uses_the_safe_loader(checkpoints):
    path = checkpoints[0]
    ckpt = _load_checkpoint(path, map_location='cpu')  # what --resume and load_from call
    assert ckpt['meta']['epoch'] == 1
    model = ImageClassifier(backbone=dict(type='ConvNeXtV2', arch=TINY),
                            head=dict(type='LinearClsHead', num_classes=5, in_channels=64))
    load_checkpoint(model, path, map_location='cpu', strict=True)
    torch.testing.assert_close(model.state_dict()['head.fc.weight'],
                               ckpt['state_dict']['head.fc.weight'])


class _RunsCommand:
    """A pickle that runs a shell command when loaded (the attack weights_only blocks)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


class _ReadsGlobals:
    """A pickle that abuses getattr to reach a function's module globals."""

    def __reduce__(self):
        return getattr, (np.ndarray, 'tofile')


@pytest.mark.parametrize('writer', ['torch.save', 'pickle.dump'])
def test_crafted_checkpoint_is_refused_and_runs_nothing(tmp_path, writer):
    marker = tmp_path / 'pwned'
    path = str(tmp_path / 'evil.pth')
    payload = {'state_dict': {}, 'meta': _RunsCommand(marker)}
    if writer == 'torch.save':
        torch.save(payload, path)
    else:
        with open(path, 'wb') as f:
            pickle.dump(payload, f, protocol=2)
    with pytest.raises(UnsafeCheckpointError, match=r'evil\.pth.*system'):
        _load_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(torch.nn.Linear(1, 1), path)
    assert not marker.exists()


def test_getattr_is_only_allowed_for_history_buffer_methods(tmp_path):
    path = str(tmp_path / 'getattr.pth')
    torch.save({'state_dict': {}, 'x': _ReadsGlobals()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r'getattr\(.*ndarray.*tofile'):
        _load_checkpoint(path)
