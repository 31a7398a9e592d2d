# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Exact resume after SIGKILL, atomic checkpoints, NaN stops, resume from the newest valid
checkpoint, strict test loading, checked --cfg-options, named errors for bad input, dead
distributed peer."""
import errno
import glob
import json
import os
import os.path as osp
import re
import shutil
import signal
import subprocess
import sys
import time
from argparse import ArgumentParser, Namespace

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

from helpers_runs import free_port, write_tiny_upernet_config
from mmcnx2.datasets import CLASSES, make_synthetic_world
from mmcnx2.engine import (CheckpointMismatchError, ConfigOptionError, NonFiniteLossError,
                           NonFiniteWeightsError, NoValidCheckpointError, StrictLoadHook,
                           build_runner, find_resume_checkpoint, load_cfg,
                           load_checkpoint_file, parse_run_args, training_checkpoint_problem)
from mmcnx2.engine.hooks import atomic_checkpoint
from toy_runner import NaNGradientAt, ToyModel, toy_runner

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TINY = dict(depths=[1, 1, 1, 1], channels=[8, 16, 32, 64])
# One thread per process: the tests run several trainings side by side on 2 cores.
ENV = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONWARNINGS='ignore')


pytestmark = pytest.mark.usefixtures('mmpretrain_scope', 'safe_loading')


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
    shrunk as in test_upernet.py (helpers_runs)."""
    ade_root = make_synthetic_world(
        str(tmp_path / 'data'), num_train=16, num_val=4, image_size=64, layouts=('ade', ))['ade']
    cfg = Config.fromfile(
        write_tiny_upernet_config(tmp_path / 'upernet.py', ade_root, iters=18, lr=1e-3,
                                  batch_size=2, log_interval=1))
    cfg.model.backbone.update(arch=TINY, drop_path_rate=0.1)
    cfg.model.decode_head.in_channels = TINY['channels']
    cfg.model.auxiliary_head.in_channels = TINY['channels'][2]
    cfg.default_hooks.checkpoint.interval = 3
    _check_exact_resume(cfg, tmp_path, 'iter', 1)


class PoisonWeightsHook(Hook):
    """Test helper: turns the head weights into NaN before iteration ``at`` (1-based). Given to
    the runner as an object, so that importing this module changes no registry."""

    def __init__(self, at):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at:
            runner.model.head.fc.weight.data.fill_(float('nan'))


@pytest.mark.slow
def test_nonfinite_loss_stops_with_iteration_and_keeps_last_checkpoint(data, tmp_path):
    cfg = _finetune_cfg(data, max_epochs=4)
    cfg.work_dir = str(tmp_path)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=2, by_epoch=False)
    runner = Runner.from_cfg(cfg)
    runner.register_hook(PoisonWeightsHook(at=5))
    with pytest.raises(NonFiniteLossError, match=r'iteration 5 .*iter_4\.pth'):
        runner.train()
    saved = sorted(osp.basename(p) for p in glob.glob(str(tmp_path / '*.pth')))
    assert saved == ['iter_2.pth', 'iter_4.pth']
    state = load_checkpoint_file(str(tmp_path / 'iter_4.pth'))['state_dict']
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def _checkpoints(work_dir) -> list:
    return sorted(f for f in os.listdir(work_dir) if f.endswith('.pth') or f.endswith('.tmp'))


def _last_checkpoint(work_dir) -> str:
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return osp.basename(f.read())


def test_old_checkpoint_is_removed_only_after_the_new_one_is_complete(tmp_path, monkeypatch):
    """max_keep_ckpts=1: while iter_n.pth is written, iter_{n-1}.pth is still there
    (mmengine's own hook deletes it first), and every write goes through a rename."""
    work_dir = str(tmp_path)
    present_during_writes = {}
    real_write = atomic_checkpoint.atomic_write

    def recording_write(path, data):
        present_during_writes[osp.basename(path)] = _checkpoints(work_dir)
        real_write(path, data)

    monkeypatch.setattr(atomic_checkpoint, 'atomic_write', recording_write)
    toy_runner(work_dir, max_iters=3).train()
    assert present_during_writes['iter_2.pth'] == ['iter_1.pth']
    assert present_during_writes['iter_3.pth'] == ['iter_2.pth']
    assert present_during_writes['last_checkpoint'] == ['iter_2.pth', 'iter_3.pth']
    assert _checkpoints(work_dir) == ['iter_3.pth'] and _last_checkpoint(work_dir) == 'iter_3.pth'


class _DiskFullAfter:
    """``os.fdopen`` whose files accept ``budget`` bytes, then raise ENOSPC."""

    def __init__(self, budget: int):
        self.budget, self.real = budget, os.fdopen

    def __call__(self, fd, mode='r', *args, **kwargs):
        f, outer = self.real(fd, mode, *args, **kwargs), self

        class Full:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                f.close()

            def write(self, data):
                f.write(data[:outer.budget])
                f.flush()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            def __getattr__(self, name):
                return getattr(f, name)

        return Full()


def test_disk_full_names_the_file_and_leaves_nothing_partial(tmp_path, monkeypatch):
    work_dir = str(tmp_path)
    toy_runner(work_dir, max_iters=1).train()
    monkeypatch.setattr(atomic_checkpoint.os, 'fdopen', _DiskFullAfter(budget=100))
    with pytest.raises(OSError, match=r'No space left on device.*' +
                       re.escape(osp.join(work_dir, 'iter_2.pth'))) as info:
        toy_runner(work_dir, max_iters=2, resume=True).train()
    assert info.value.errno == errno.ENOSPC
    # The previous checkpoint and last_checkpoint are as they were; no partial file.
    assert _checkpoints(work_dir) == ['iter_1.pth'] and _last_checkpoint(work_dir) == 'iter_1.pth'
    assert load_checkpoint_file(osp.join(work_dir, 'iter_1.pth'))['meta']['iter'] == 1


def test_nan_gradient_under_finite_loss_stops_before_saving(tmp_path):
    """The gradient of iteration 3 is NaN, its loss finite: nothing is saved for iteration
    3, and the message names iter_2.pth, whose weights are finite."""
    work_dir = str(tmp_path)
    with pytest.raises(NonFiniteWeightsError, match=r'iteration 3 .*state_dict\.linear\.weight'
                       r'.*Last good checkpoint: .*iter_2\.pth'):
        toy_runner(work_dir, max_iters=5, hooks=[NaNGradientAt(3)]).train()
    assert _checkpoints(work_dir) == ['iter_2.pth'] and _last_checkpoint(work_dir) == 'iter_2.pth'
    assert training_checkpoint_problem(osp.join(work_dir, 'iter_2.pth')) == ''


@pytest.fixture
def three_checkpoints(tmp_path):
    work_dir = str(tmp_path)
    toy_runner(work_dir, max_iters=3, max_keep_ckpts=3).train()
    return work_dir


@pytest.mark.parametrize('damage, expected, reason', [
    ('none', 'iter_3.pth', 'last_checkpoint names it'),
    ('last_checkpoint missing', 'iter_3.pth', 'last_checkpoint is missing'),
    ('last_checkpoint empty', 'iter_3.pth', 'last_checkpoint is empty'),
    ('last_checkpoint names a missing file', 'iter_3.pth', "iter_9.pth', which does not exist"),
    ('newest truncated', 'iter_2.pth', 'is corrupt: a zip-format torch checkpoint'),
    ('newest zero bytes', 'iter_2.pth', 'is empty'),
    ('newest NaN', 'iter_2.pth', 'non-finite weights'),
])
def test_resume_takes_the_newest_valid_checkpoint(three_checkpoints, damage, expected,
                                                  reason):
    work_dir = three_checkpoints
    marker, newest = osp.join(work_dir, 'last_checkpoint'), osp.join(work_dir, 'iter_3.pth')
    if damage == 'last_checkpoint missing':
        os.remove(marker)
    elif damage == 'last_checkpoint empty':
        open(marker, 'w').close()
    elif damage == 'last_checkpoint names a missing file':
        with open(marker, 'w') as f:
            f.write(osp.join(work_dir, 'iter_9.pth'))
    elif damage == 'newest truncated':
        with open(newest, 'r+b') as f:
            f.truncate(os.path.getsize(newest) // 2)
    elif damage == 'newest zero bytes':
        open(newest, 'w').close()
    elif damage == 'newest NaN':
        checkpoint = load_checkpoint_file(newest)
        checkpoint['state_dict']['linear.weight'].fill_(float('nan'))
        torch.save(checkpoint, newest)
    found, why = find_resume_checkpoint(work_dir)
    assert osp.basename(found) == expected
    assert reason in why, why


def test_resume_with_nothing_valid_says_what_is_wrong_with_each(three_checkpoints):
    for name in ('iter_1.pth', 'iter_2.pth', 'iter_3.pth'):
        open(osp.join(three_checkpoints, name), 'w').close()
    with pytest.raises(NoValidCheckpointError, match=r'names .*iter_3\.pth, which is unusable: '
                       r'.*empty.*; iter_2\.pth: .*empty.*; iter_1\.pth: .*empty'):
        find_resume_checkpoint(three_checkpoints)


def test_resume_that_resumes_nothing_refuses_to_overwrite(three_checkpoints):
    """What mmengine's --resume does without last_checkpoint (mim, upstream train.py):
    it would start again at iteration 1 and overwrite iter_1..3.pth."""
    os.remove(osp.join(three_checkpoints, 'last_checkpoint'))
    before = {f: os.stat(osp.join(three_checkpoints, f)).st_mtime_ns
              for f in _checkpoints(three_checkpoints)}
    with pytest.raises(RuntimeError, match=r'nothing was resumed.*Resuming from .*iter_3\.pth'
                       r'.*--resume .*iter_3\.pth'):
        toy_runner(three_checkpoints, max_iters=6, resume=True).train()
    assert before == {f: os.stat(osp.join(three_checkpoints, f)).st_mtime_ns
                      for f in _checkpoints(three_checkpoints)}


def test_fresh_run_says_it_overwrites_an_earlier_runs_checkpoints(three_checkpoints, capfd):
    toy_runner(three_checkpoints, max_iters=1).train()
    captured = capfd.readouterr()
    assert ('holds checkpoints of an earlier run (iter_1.pth, iter_2.pth, iter_3.pth) and this '
            'run does not resume it') in captured.out + captured.err


def test_test_time_loading_is_strict(tmp_path):
    """tools/test.py registers StrictLoadHook: a head of another size is an error, not a
    "size mismatch" warning followed by a metric of random weights."""
    path = str(tmp_path / 'three_outputs.pth')
    torch.save({'state_dict': ToyModel(out_features=3).state_dict(), 'meta': {}}, path)
    runner = toy_runner(str(tmp_path / 'work'))
    runner.register_hook(StrictLoadHook(f'{path} with toy.py'))
    with pytest.raises(CheckpointMismatchError, match=r'(?s)' + re.escape(path) +
                       r'.*size mismatch for linear\.weight'):
        runner.load_checkpoint(path)
    runner.load_checkpoint(str(_saved_toy(tmp_path)))  # a checkpoint that fits loads


def _saved_toy(tmp_path):
    path = tmp_path / 'fits.pth'
    torch.save({'state_dict': ToyModel().state_dict(), 'meta': {}}, str(path))
    return path


ATTO = osp.join(REPO, 'configs/convnextv2/convnextv2-atto_fcmae-pre_8xb128-600e_in1k.py')


def _options(**options):
    return load_cfg(Namespace(config=ATTO, cfg_options=options, launcher='none', work_dir=None))


@pytest.mark.parametrize('option, message', [
    ('pretrianed', "the config (top level) has no key 'pretrianed'. Did you mean `pretrained`?"),
    ('train_cfgg.max_epochs', "has no key 'train_cfgg'. Did you mean `train_cfg`?"),
    ('default_hooks.checkpoint.intervl',
     "`default_hooks.checkpoint` has no key 'intervl'. Did you mean "
     '`default_hooks.checkpoint.interval`?'),
    ('model.backbone.drop_path_rat', 'Did you mean `model.backbone.drop_path_rate`?'),
    ('model.head.num_classes', "model.head.num_classes='abc': expects a number"),
    ('param_scheduler.7.eta_min', "`param_scheduler` is a list with indices 0..0; '7' is not"),
])
def test_cfg_option_typo_names_the_closest_key(option, message):
    with pytest.raises(ConfigOptionError, match=re.escape(message)):
        _options(**{option: 'abc' if 'num_classes' in option else 2})


def test_cfg_options_that_exist_or_are_marked_new_are_applied():
    cfg = _options(**{
        'default_hooks.checkpoint.save_best': 'auto',  # an argument of CheckpointHook
        'optim_wrapper.accumulative_counts': 2,  # of mmengine's implied OptimWrapper
        'train_cfg.val_begin': 3,  # of the EpochBasedTrainLoop train_cfg implies
        'load_from': 'x.pth',  # of the Runner
        '+model.backbone.my_new_argument': 1,  # new on purpose
        'model.head.num_classes': 10,
    })
    assert cfg.default_hooks.checkpoint.save_best == 'auto'
    assert cfg.optim_wrapper.accumulative_counts == 2 and cfg.train_cfg.val_begin == 3
    assert cfg.model.backbone.my_new_argument == 1 and cfg.model.head.num_classes == 10


def test_malformed_cfg_option_says_what_is_wrong(monkeypatch, capsys):
    monkeypatch.setattr(sys, 'argv', ['train.py', ATTO, '--cfg-options', 'foo'])
    parser = ArgumentParser()
    parser.add_argument('config')
    with pytest.raises(SystemExit) as info:
        parse_run_args(parser)
    assert info.value.code == 2
    assert "--cfg-options 'foo': expected KEY=VALUE" in capsys.readouterr().err


def test_loading_a_config_starts_no_distributed_state():
    """load_cfg only reads the config; the gloo group and the CPU model wrapper are
    prepare_distributed's, an explicit step of the tools."""
    import torch.distributed as dist
    cfg = load_cfg(Namespace(config=ATTO, cfg_options=None, launcher='pytorch', work_dir=None))
    assert not dist.is_initialized() and 'model_wrapper_cfg' not in cfg
    assert cfg.launcher == 'pytorch'


def test_runner_type_is_honoured(tmp_path):
    """tools/train.py and test.py build the runner as mmdet's and mmpretrain's tools do."""
    from mmengine.runner import FlexibleRunner
    cfg = Config(dict(model=dict(type='ImageClassifier', backbone=dict(type='ConvNeXtV2',
                                                                         arch=TINY)),
                      work_dir=str(tmp_path), default_scope='mmpretrain', env_cfg=dict(),
                      experiment_name=f'flexible_{os.getpid()}'))
    assert type(build_runner(cfg)).__name__ == 'Runner'
    cfg.runner_type = 'FlexibleRunner'
    assert isinstance(build_runner(cfg), FlexibleRunner)


@pytest.mark.parametrize('damage', ['truncated', 'not an image'])
def test_unreadable_image_names_the_file(data, tmp_path, damage):
    """Upstream behaviour, kept as a guard on the README's promise: mmcv's LoadImageFromFile
    (cv2 decoder, the configs' default) names the file; mmcnx2 adds nothing here."""
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
    """Upstream behaviour, kept as a guard on the README's promise: Python's TypeError, which
    mmengine's registry re-raises with the class name; mmcnx2 adds nothing here (ConvNeXtV2
    takes no ``**kwargs`` that would swallow the typo)."""
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


@pytest.mark.slow
def test_dead_worker_ends_distributed_run(data, tmp_path):
    """SIGKILL rank 1 of a 2-process gloo run: torchrun stops rank 0 and fails quickly.

    Upstream behaviour (torchrun's agent ends the job when a worker dies, no restarts by
    default), kept as a guard that tools/dist_train.sh launches through it unchanged; mmcnx2
    adds nothing here."""
    cfg = _finetune_cfg(data, max_epochs=200)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg_path = str(tmp_path / 'cfg.py')
    cfg.dump(cfg_path)
    work_dir = str(tmp_path / 'work')
    proc = subprocess.Popen(
        ['bash', osp.join(REPO, 'tools/dist_train.sh'), cfg_path, '2', '--work-dir', work_dir],
        cwd=REPO, env=dict(ENV, PORT=free_port()), stdout=subprocess.DEVNULL,
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
