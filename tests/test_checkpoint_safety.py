# Copyright (c) mmcnx2 contributors. All rights reserved.
"""mmengine checkpoints load with ``weights_only=True``; crafted, forged and corrupt files are
refused with a named error; the scope of what changes process-wide is one explicit call."""
import argparse
import os
import os.path as osp
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner, load_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint
from mmpretrain.models import ImageClassifier

from crafted_checkpoints import CODE_RUNNING, CORRUPT, write_corrupt
from mmcnx2.datasets import CLASSES, PALETTE, make_synthetic_world
from mmcnx2.engine import (SAFE_GLOBALS, CorruptCheckpointError, UnsafeCheckpointError,
                           load_checkpoint_file)
from mmcnx2.engine.checkpoint import UnrestrictedLoadWarning

TINY = dict(depths=[1, 1, 1, 1], channels=[8, 16, 32, 64])


pytestmark = pytest.mark.usefixtures('mmpretrain_scope', 'safe_loading')


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


def _load_all(paths, allowed=SAFE_GLOBALS):
    for path in paths:
        with torch.serialization.safe_globals(allowed):
            ckpt = torch.load(path, weights_only=True)
        assert {'meta', 'state_dict', 'message_hub'} <= set(ckpt)


@pytest.mark.slow
def test_training_checkpoints_load_weights_only(checkpoints):
    _load_all(checkpoints)
    # The allow list is applied per load, never added to torch's process-wide list.
    ours = {HistoryBuffer, np.ndarray, np.dtype}
    assert not ours & set(torch.serialization.get_safe_globals())
    ckpt = load_checkpoint_file(checkpoints[0])
    # What made torch>=2.6 refuse them: HistoryBuffers with NumPy arrays, NumPy scalars.
    buffer = ckpt['message_hub']['log_scalars']['train/loss']
    assert type(buffer).__name__ == 'HistoryBuffer' and buffer.mean() > 0
    assert buffer.statistics('max') >= buffer.statistics('min')
    assert isinstance(ckpt['message_hub']['runtime_info']['eta'], np.floating)
    assert ckpt['meta']['dataset_meta']['palette'][0] == list(PALETTE[0])


@pytest.mark.slow
def test_allow_list_is_exactly_what_checkpoints_need(checkpoints):
    """Each allowed global (NumPy-1 aliases aside) is needed by some checkpoint."""
    needed = [g for g in SAFE_GLOBALS if not (isinstance(g, tuple) and 'numpy.core.' in g[1])]
    for left_out in needed:
        with pytest.raises(pickle.UnpicklingError):
            _load_all(checkpoints, [g for g in needed if g is not left_out])
    _load_all(checkpoints, needed)


@pytest.mark.slow
def test_load_from_uses_the_safe_loader(checkpoints):
    path = checkpoints[0]
    ckpt = _load_checkpoint(path, map_location='cpu')  # what --resume and load_from call
    assert ckpt['meta']['epoch'] == 1
    model = ImageClassifier(backbone=dict(type='ConvNeXtV2', arch=TINY),
                            head=dict(type='LinearClsHead', num_classes=5, in_channels=64))
    load_checkpoint(model, path, map_location='cpu', strict=True)
    torch.testing.assert_close(model.state_dict()['head.fc.weight'],
                               ckpt['state_dict']['head.fc.weight'])


@pytest.mark.parametrize('name', list(CODE_RUNNING))
def test_crafted_checkpoint_runs_nothing(tmp_path, name):
    """Every crafted file, through every loader mmengine's load_from / resume / Pretrained
    use: nothing runs, and what needs a Python object or is forged is refused, named."""
    marker = tmp_path / 'pwned'
    path = str(tmp_path / 'crafted.pth')
    CODE_RUNNING[name](path, marker)
    refused = 'meta[' not in name and 'runtime_info' not in name
    for load in (load_checkpoint_file, _load_checkpoint,
                 lambda p: load_checkpoint(torch.nn.Linear(1, 1), p)):
        if refused:
            with pytest.raises(UnsafeCheckpointError, match=r'crafted\.pth'):
                load(path)
        else:
            load(path)
    assert not marker.exists()
    if not refused:  # config source texts never reach mmengine's parsers
        ckpt = _load_checkpoint(path)
        assert not {'config', 'cfg'} & set(ckpt['meta'])
        assert 'cfg' not in ckpt['message_hub']['runtime_info']


@pytest.mark.slow
def test_forged_numpy_array_is_a_real_threat(tmp_path):
    """Allowing NumPy's globals without the dtype check loads the forged array, and reading
    it dereferences the pointer from the file: the process dies (SIGSEGV)."""
    path = str(tmp_path / 'forged.pth')
    CODE_RUNNING['forged NumPy array (object field)'](path, tmp_path / 'unused')
    code = ('import numpy as np, torch\n'  # the NumPy part of SAFE_GLOBALS
            'core = np._core.multiarray\n'
            'torch.serialization.add_safe_globals([np.ndarray, np.dtype, core._reconstruct,\n'
            '                                      type(np.dtype(np.float64))])\n'
            f'x = torch.load({path!r}, weights_only=True)["message_hub"]["runtime_info"]["eta"]\n'
            'print("loaded", flush=True); print(x["a"])')
    run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert 'loaded' in run.stdout and run.returncode < 0, (run.returncode, run.stderr[-2000:])


@pytest.mark.parametrize('name', list(CORRUPT))
def test_corrupt_checkpoint_is_named_as_corrupt(tmp_path, name):
    path = write_corrupt(tmp_path, name)
    for load in (load_checkpoint_file, _load_checkpoint):
        with pytest.raises(CorruptCheckpointError, match=re.escape(path) + r'.*(corrupt|empty|'
                           r'not a valid \.safetensors)'):
            load(path)


@pytest.mark.slow
def test_importing_mmcnx2_changes_no_loader():
    """The process-wide change is explicit: importing mmcnx2 leaves mmengine's loader and
    torch's safe list alone; the module the configs list in custom_imports installs it."""
    code = ('import numpy, torch, mmcnx2\n'
            'from mmengine.runner.checkpoint import CheckpointLoader, load_from_local\n'
            'assert CheckpointLoader._schemes[""] is load_from_local\n'
            'import mmcnx2.engine.safe_checkpoint_loading\n'
            'from mmcnx2.engine.checkpoint import load_local_checkpoint\n'
            'assert CheckpointLoader._schemes[""] is load_local_checkpoint\n'
            'from mmengine.logging import HistoryBuffer\n'
            'ours = {HistoryBuffer, numpy.ndarray, numpy.dtype}\n'
            'assert not ours & set(torch.serialization.get_safe_globals())\n')
    run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]


def test_torch_escape_hatch_is_honoured(tmp_path, monkeypatch):
    """TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 loads what plain torch/mmengine load (here an
    argparse.Namespace), with a warning naming the file; unset, the file is refused."""
    path = str(tmp_path / 'namespace.pth')
    torch.save({'state_dict': {}, 'args': argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(UnsafeCheckpointError, match='argparse.Namespace'):
        _load_checkpoint(path)
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    warning = f'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set: {re.escape(path)} is unpickled'
    for load in (_load_checkpoint, load_checkpoint_file):
        with pytest.warns(UnrestrictedLoadWarning, match=warning):
            assert load(path)['args'].lr == 0.1


def test_getattr_is_only_allowed_for_history_buffer_methods(tmp_path):
    path = str(tmp_path / 'getattr.pth')
    CODE_RUNNING['getattr beyond HistoryBuffer'](path, None)
    with pytest.raises(UnsafeCheckpointError, match=r'getattr\(.*ndarray.*tofile'):
        _load_checkpoint(path)
