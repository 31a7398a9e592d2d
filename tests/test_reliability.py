# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Exact resume after SIGKILL, NaN stop, named errors for bad input, dead distributed peer."""
import glob
import json
import os
import os.path as osp
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import HOOKS, DefaultScope
from mmengine.runner import Runner

from mmcnx2.datasets import CLASSES, make_synthetic_world
from mmcnx2.engine import NonFiniteLossError

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY = dict(depths=[1, 1, 1, 1], channels=[8, 16, 32, 64])
# One thread per process: the tests run several trainings side by side on 2 cores.
ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONWARNINGS='ignore')


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    """Build in mmpretrain's scope whatever scope an earlier test's runner left behind."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('rel'))
    return make_synthetic_world(root, num_train=12, num_val=4, image_size=64,
                                layouts=('imagenet', ))['imagenet']


def _loader(data_root, split, pipeline, batch_size=4):
    return dict(
        batch_size=batch_size, num_workers=0,
        dataset=dict(type='CustomDataset', data_root=data_root, ann_file=f'meta/{split}.txt',
                     data_prefix=split, classes=CLASSES, pipeline=pipeline),
        sampler=dict(type='DefaultSampler', shuffle=split == 'train'))


def _finetune_cfg(data_root: str, max_epochs: int = 6) -> Config:
    """The atto fine-tuning config shrunk to a tiny arch, 64x64 images and no validation.

    Keeps the recipe's random parts: drop path, label smoothing, EMA, layer decay and
    random augmentations in the main process (RandomResizedCrop, flip, erasing).
    """
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/convnextv2/convnextv2-atto_fcmae-pre_8xb128-600e_in1k.py'))
    cfg.pop('pretrained')
    cfg.model.backbone = dict(type='ConvNeXtV2', arch=TINY, drop_path_rate=0.1)
    cfg.model.head.update(num_classes=len(CLASSES), in_channels=64)
    cfg.data_preprocessor.num_classes = len(CLASSES)
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='RandomResizedCrop', scale=64, backend='pillow', interpolation='bicubic'),
        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
        dict(type='RandomErasing', erase_prob=0.25, mode='rand'),
        dict(type='PackInputs'),
    ]
    cfg.train_dataloader = _loader(data_root, 'train', pipeline)
    for key in ('val_dataloader', 'val_evaluator', 'val_cfg', 'test_dataloader',
                'test_evaluator', 'test_cfg'):
        cfg[key] = None
    cfg.train_cfg = dict(by_epoch=True, max_epochs=max_epochs)
    cfg.param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=True,
                                convert_to_iter_based=True)]
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    return cfg


def _fcmae_cfg(data_root: str) -> Config:
    """The FCMAE primitive config on a tiny arch and 64x64 images, iteration-based as the
    detection and segmentation schedules are (random masks and crops every step)."""
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/fcmae/fcmae_convnextv2-base_64xb64-coslr-800e_in1k.py'))
    cfg.model.backbone.arch = TINY
    cfg.model.neck.update(in_channels=64, decoder_dim=32)
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.2, 1.0),
             backend='pillow', interpolation='bicubic'),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackInputs'),
    ]
    # Keep the base loader (ImageNet layout, default_collate for the selfsup preprocessor).
    cfg.train_dataloader.update(batch_size=4, num_workers=0, persistent_workers=False,
                                sampler=dict(type='InfiniteSampler', shuffle=True))
    cfg.train_dataloader.dataset.update(data_root=data_root, pipeline=pipeline)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=18)
    cfg.param_scheduler = [dict(type='CosineAnnealingLR', by_epoch=False)]
    cfg.log_processor = dict(by_epoch=False)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=3, by_epoch=False)
    cfg.custom_hooks = [dict(type='ExactResumeHook')]
    return cfg


def _losses(work_dir: str) -> dict:
    """{iteration: loss} from the newest run's vis_data/scalars.json in ``work_dir``."""
    path = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))[-1]
    with open(path) as f:
        return {d['step']: d['loss'] for d in map(json.loads, f) if 'loss' in d}


def _train(cfg_path, work_dir, *args):
    return subprocess.Popen(
        [sys.executable, osp.join(REPO, 'tools/train.py'), cfg_path, '--work-dir', work_dir,
         *args], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_after_checkpoint(proc, work_dir: str, unit: str, at_least: int) -> int:
    """SIGKILL ``proc`` once its last checkpoint is ``{unit}_{n}.pth`` with ``n >= at_least``.

    Returns:
        int: that ``n``, the epoch or iteration a resume starts after.
    """
    marker = osp.join(work_dir, 'last_checkpoint')
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = re.search(rf'{unit}_(\d+)\.pth', open(marker).read()) if osp.exists(
            marker) else None
        if found and int(found.group(1)) >= at_least:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, (
        f'the run ended ({proc.returncode}) before it could be killed: '
        f'{proc.stderr.read().decode()[-3000:]}')
    return int(found.group(1))


def _check_exact_resume(cfg: Config, tmp_path, unit: str, iters_per_unit: int):
    """Train 18 iterations uninterrupted and, side by side, SIGKILL a second run after its
    second checkpoint and resume it with ``tools/train.py --resume``: the resumed
    iterations log exactly the losses of the uninterrupted run."""
    cfg_path = str(tmp_path / 'cfg.py')
    cfg.dump(cfg_path)
    ref_dir, cut_dir = str(tmp_path / 'reference'), str(tmp_path / 'killed')
    reference = _train(cfg_path, ref_dir)
    killed = _train(cfg_path, cut_dir)
    # Both configs save every 3 iterations; the second checkpoint is after iteration 6.
    saved = _kill_after_checkpoint(killed, cut_dir, unit, at_least=6 // iters_per_unit)
    assert reference.wait() == 0, reference.stderr.read().decode()[-3000:]
    resumed = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools/train.py'), cfg_path, '--work-dir', cut_dir,
         '--resume'], cwd=REPO, env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = _losses(ref_dir), _losses(cut_dir)
    assert sorted(got) == list(range(saved * iters_per_unit + 1, 19))
    assert {k: expected[k] for k in got} == got


@pytest.mark.slow
def test_finetune_resume_after_sigkill_repeats_losses(data, tmp_path):
    _check_exact_resume(_finetune_cfg(data), tmp_path, 'epoch', 3)


@pytest.mark.slow
def test_fcmae_resume_after_sigkill_repeats_losses(data, tmp_path):
    _check_exact_resume(_fcmae_cfg(data), tmp_path, 'iter', 1)


@pytest.mark.slow
def test_upernet_resume_after_sigkill_repeats_losses(tmp_path):
    """The real UperNet config (mmseg scope; random crops, flips and drop path every step),
    shrunk as in test_upernet.py."""
    from test_upernet import write_tiny_config
    ade_root = make_synthetic_world(
        str(tmp_path / 'data'), num_train=16, num_val=4, image_size=64, layouts=('ade', ))['ade']
    cfg = Config.fromfile(
        write_tiny_config(tmp_path / 'upernet.py', ade_root, iters=18, lr=1e-3, batch_size=2,
                          log_interval=1))
    cfg.model.backbone.update(arch=TINY, drop_path_rate=0.1)
    cfg.model.decode_head.in_channels = TINY['channels']
    cfg.model.auxiliary_head.in_channels = TINY['channels'][2]
    cfg.default_hooks.checkpoint.interval = 3
    _check_exact_resume(cfg, tmp_path, 'iter', 1)


@HOOKS.register_module()
class _PoisonWeightsHook(Hook):
    """Test helper: turns the head weights into NaN before iteration ``at`` (1-based)."""

    def __init__(self, at):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at:
            runner.model.head.fc.weight.data.fill_(float('nan'))


def test_nonfinite_loss_stops_with_iteration_and_keeps_last_checkpoint(data, tmp_path):
    cfg = _finetune_cfg(data, max_epochs=4)
    cfg.work_dir = str(tmp_path)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=2, by_epoch=False)
    cfg.custom_hooks.append(dict(type='_PoisonWeightsHook', at=5))
    with pytest.raises(NonFiniteLossError, match=r'iteration 5 .*iter_4\.pth'):
        Runner.from_cfg(cfg).train()
    saved = sorted(osp.basename(p) for p in glob.glob(str(tmp_path / '*.pth')))
    assert saved == ['iter_2.pth', 'iter_4.pth']
    state = torch.load(str(tmp_path / 'iter_4.pth'), weights_only=True)['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize('damage', ['truncated', 'not an image'])
def test_unreadable_image_names_the_file(data, tmp_path, damage):
    """mmcv's LoadImageFromFile (cv2 decoder, the configs' default) names the file."""
    root = str(tmp_path / 'imagenet')
    shutil.copytree(data, root)
    bad = osp.join(root, 'train', 'circle', 'train_000000.JPEG')
    with open(bad, 'rb') as f:
        content = f.read()
    with open(bad, 'wb') as f:
        f.write(content[:len(content) // 3] if damage == 'truncated' else b'GIF89a nonsense')
    cfg = _finetune_cfg(root, max_epochs=1)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    with pytest.raises(Exception, match=r'failed to load image: .*circle/train_000000\.JPEG'):
        Runner.from_cfg(cfg).train()


def test_unknown_arch_lists_the_valid_ones():
    from mmpretrain.registry import MODELS
    with pytest.raises(ValueError, match=r"'tinny'.*\['atto', 'base', 'femto', 'huge', "
                       r"'large', 'nano', 'pico', 'tiny'\]"):
        MODELS.build(dict(type='ConvNeXtV2', arch='tinny'))


def test_config_typo_names_the_argument():
    from mmpretrain.registry import MODELS
    cfg = dict(type='ImageClassifier',
               backbone=dict(type='ConvNeXtV2', arch=TINY, drop_path_rat=0.1),
               head=dict(type='LinearClsHead', num_classes=5, in_channels=64))
    with pytest.raises(TypeError, match=r"ConvNeXtV2.*unexpected keyword argument "
                       r"'drop_path_rat'"):
        MODELS.build(cfg)


def test_checkpoint_with_wrong_keys_lists_them(tmp_path):
    from mmpretrain.registry import MODELS
    model = MODELS.build(dict(type='ConvNeXtV2', arch=TINY))
    state = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    state.pop('backbone.stages.1.0.grn.gamma')
    state['backbone.stages.9.0.extra'] = torch.zeros(1)
    state['backbone.stages.0.0.pointwise_conv1.weight'] = torch.zeros(3, 3)
    path = str(tmp_path / 'bad.pth')
    torch.save({'state_dict': state}, path)
    target = MODELS.build(dict(type='ConvNeXtV2', arch=TINY, init_cfg=dict(
        type='Pretrained', checkpoint=path, prefix='backbone.')))
    with pytest.raises(RuntimeError) as info:
        target.init_weights()
    message = str(info.value)
    assert "missing keys (1): ['stages.1.0.grn.gamma']" in message
    assert "unexpected keys (1): ['stages.9.0.extra']" in message
    assert 'stages.0.0.pointwise_conv1.weight: checkpoint (3, 3) vs model (32, 8)' in message


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dead_worker_ends_distributed_run(data, tmp_path):
    """SIGKILL rank 1 of a 2-process gloo run: torchrun stops rank 0 and fails quickly."""
    cfg = _finetune_cfg(data, max_epochs=200)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg_path = str(tmp_path / 'cfg.py')
    cfg.dump(cfg_path)
    work_dir = str(tmp_path / 'work')
    proc = subprocess.Popen(
        ['bash', osp.join(REPO, 'tools/dist_train.sh'), cfg_path, '2', '--work-dir', work_dir],
        cwd=REPO, env=dict(ENV, PORT=str(_free_port())), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, start_new_session=True)
    try:
        # Both ranks are training once the first epoch's checkpoint is written.
        deadline = time.time() + 300
        while not osp.exists(osp.join(work_dir, 'epoch_1.pth')) and time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            time.sleep(0.2)
        workers = subprocess.run(['pgrep', '-P', str(proc.pid)], capture_output=True,
                                 text=True).stdout.split()
        assert len(workers) == 2, workers
        os.kill(int(workers[1]), signal.SIGKILL)
        start = time.time()
        returncode = proc.wait(timeout=120)
        elapsed = time.time() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert returncode != 0
    assert elapsed < 60, f'the surviving rank took {elapsed:.1f}s to stop'
    print(f'torchrun stopped {elapsed:.1f}s after a worker was killed')
