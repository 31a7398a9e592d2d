# Copyright (c) mmcnx2 contributors. All rights reserved.
"""The reliability issue's attacks, as three catalogues whose sizes are the README's figures.

- Crafted checkpoints (tests/crafted_checkpoints.py ``CODE_RUNNING``) through every loading
  path (:data:`LOAD_PATHS`): code executions from a checkpoint must be 0.
- :data:`BAD_INPUTS`: each ends in an error that names the file (and key) at fault.
- :data:`FAULTS` (and the kill moments of the slow kill test): after each, a valid checkpoint
  no older than the last completed one is there and ``--resume`` continues from it.

``test_readme_states_the_figures`` checks that the README's "Reliability" section quotes
these counts.
"""
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
from mmengine.infer import BaseInferencer
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint

from crafted_checkpoints import CODE_RUNNING, CORRUPT, write_corrupt
from mmcnx2.converters import load_source
from mmcnx2.datasets import make_synthetic_world
from mmcnx2.engine import (StrictLoadHook, UnsafeCheckpointError, find_resume_checkpoint,
                           load_cfg, load_checkpoint_file, parse_run_args,
                           training_checkpoint_problem)
from mmcnx2.engine.hooks import atomic_checkpoint
from toy_runner import NaNGradientAt, ToyModel, toy_runner

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
ATTO = osp.join(REPO, 'configs/convnextv2/convnextv2-atto_fcmae-pre_8xb128-600e_in1k.py')


pytestmark = pytest.mark.usefixtures('safe_loading')


# --- crafted checkpoints x loading paths: no code may run ------------------------------

def _resume(path, work_dir):
    runner = toy_runner(work_dir)
    runner._train_loop = runner.build_train_loop(runner._train_loop)
    runner.resume(path)


def _test_load(path, work_dir):
    runner = toy_runner(work_dir)
    runner.register_hook(StrictLoadHook(path))
    runner.load_checkpoint(path)


#: Every way a checkpoint file is opened: mmcnx2's own loader, mmengine's (``load_from``,
#: ``Pretrained``, ``init_model``), ``--resume``, tools/test.py, the converter, and
#: mmengine's inferencers given weights without a config (they parse the config inside).
LOAD_PATHS = {
    'load_checkpoint_file': lambda path, work_dir: load_checkpoint_file(path),
    'mmengine _load_checkpoint (load_from)': lambda path, work_dir: _load_checkpoint(path),
    'load_checkpoint into a model (Pretrained)':
        lambda path, work_dir: load_checkpoint(ToyModel(), path),
    'Runner.resume (--resume)': _resume,
    'tools/test.py (strict load)': _test_load,
    'converter load_source': lambda path, work_dir: load_source(path),
    'inferencer without config': lambda path, work_dir: BaseInferencer._init_model(
        None, Config(), path),
}
CRAFTED_LOADS = len(CODE_RUNNING) * len(LOAD_PATHS)


@pytest.mark.parametrize('path_name', list(LOAD_PATHS))
@pytest.mark.parametrize('payload', list(CODE_RUNNING))
def test_no_code_runs_from_a_checkpoint(tmp_path, payload, path_name):
    marker = tmp_path / 'pwned'
    path = str(tmp_path / 'crafted.pth')
    CODE_RUNNING[payload](path, marker)
    needs_objects = 'meta[' not in payload and 'runtime_info' not in payload
    try:
        LOAD_PATHS[path_name](path, str(tmp_path / 'work'))
    except UnsafeCheckpointError as err:
        assert 'crafted.pth' in str(err)
    except Exception as err:  # the loaded file is no real checkpoint: later steps may fail
        assert not needs_objects, f'{type(err).__name__}: {err}'
    else:
        assert not needs_objects, 'a file needing Python objects or forged NumPy loaded'
    assert not marker.exists(), 'code from the checkpoint ran'


# --- bad inputs: each error names the file (and key) -----------------------------------

@pytest.fixture(scope='module')
def world(tmp_path_factory):
    return make_synthetic_world(str(tmp_path_factory.mktemp('world')), num_train=2, num_val=1,
                                image_size=32)


def _corrupt_checkpoint_case(kind, path_name):
    def case(tmp_path, world):
        path = write_corrupt(tmp_path, kind)
        return LOAD_PATHS[path_name], (path, str(tmp_path / 'work')), re.escape(path)
    return case


def _damage(path, how):
    with open(path, 'rb') as f:
        content = f.read()
    with open(path, 'wb') as f:
        f.write({'zero bytes': b'', 'truncated': content[:len(content) // 3],
                 'not an image': b'GIF89a nonsense'}[how])


def _image_case(how, backend):
    def case(tmp_path, world):
        from mmpretrain.registry import DATASETS
        root = shutil.copytree(world['imagenet'], str(tmp_path / 'imagenet'))
        with DefaultScope.overwrite_default_scope('mmpretrain'):
            dataset = DATASETS.build(dict(
                type='CheckedCustomDataset', data_root=root, ann_file='meta/train.txt',
                data_prefix='train', pipeline=[dict(type='LoadImageFromFile',
                                                    imdecode_backend=backend)]))
        path = dataset.get_data_info(0)['img_path']
        _damage(path, how)
        return dataset.__getitem__, (0, ), re.escape(path)
    return case


def _label_case(how):
    def case(tmp_path, world):
        from mmseg.registry import DATASETS
        root = shutil.copytree(world['ade'], str(tmp_path / 'ade'))
        with DefaultScope.overwrite_default_scope('mmseg'):
            dataset = DATASETS.build(dict(
                type='CheckedBaseSegDataset', data_root=root, img_suffix='.jpg',
                seg_map_suffix='.png', data_prefix=dict(
                    img_path='images/training', seg_map_path='annotations/training'),
                pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]))
        path = dataset.get_data_info(0)['seg_map_path']
        _damage(path, how)
        return dataset.__getitem__, (0, ), re.escape(path) + '.*LoadAnnotations'
    return case


def _coco_case(edit, expected):
    def case(tmp_path, world):
        from mmdet.registry import DATASETS
        ann_file = osp.join(world['coco'], 'annotations', 'instances_train2017.json')
        with open(ann_file) as f:
            coco = json.load(f)
        classes = edit(coco)
        path = str(tmp_path / 'instances.json')
        with open(path, 'w') as f:
            json.dump(coco, f)

        def build():
            with DefaultScope.overwrite_default_scope('mmdet'):
                return DATASETS.build(dict(
                    type='CheckedCocoDataset', ann_file=path, metainfo=dict(classes=classes),
                    data_prefix=dict(img=osp.join(world['coco'], 'train2017/')),
                    filter_cfg=dict(filter_empty_gt=True), pipeline=[]))
        return build, (), re.escape(path) + '.*' + expected
    return case


def _drop(key):
    def edit(coco):
        del coco[key]
        return [c['name'] for c in coco.get('categories', [dict(name='circle')])]
    return edit


def _rename_classes(coco):
    return ['cat', 'dog']


def _no_annotations_of_classes(coco):
    coco['annotations'] = [a for a in coco['annotations'] if a['category_id'] != 1]
    return [coco['categories'][0]['name']]


def _bad_bbox(coco):
    coco['annotations'][0]['bbox'] = [1, 2, -3, 4]
    return [c['name'] for c in coco['categories']]


def _missing_image(coco):
    coco['images'][0]['file_name'] = 'gone.jpg'
    return [c['name'] for c in coco['categories']]


def _option_case(options, expected):
    def case(tmp_path, world):
        args = Namespace(config=ATTO, cfg_options=options, launcher='none', work_dir=None)
        return load_cfg, (args, ), re.escape(expected)
    return case


def _strict_test_case(tmp_path, world):
    path = str(tmp_path / 'ten_classes.pth')
    torch.save({'state_dict': ToyModel(out_features=10).state_dict(), 'meta': {}}, path)
    return LOAD_PATHS['tools/test.py (strict load)'], (path, str(tmp_path / 'w')), (
        re.escape(path) + '.*does not fit the model')


def _nothing_valid_to_resume(tmp_path, world):
    work_dir = str(tmp_path)
    toy_runner(work_dir, max_iters=2, max_keep_ckpts=2).train()
    for name in ('iter_1.pth', 'iter_2.pth'):
        _damage(osp.join(work_dir, name), 'truncated')
    return find_resume_checkpoint, (work_dir, ), r'iter_2\.pth.*corrupt.*iter_1\.pth.*corrupt'


#: name -> case(tmp_path, world) returning (call, args, regex the error must match).
BAD_INPUTS = {
    **{f'checkpoint: {kind}, via {path_name}': _corrupt_checkpoint_case(kind, path_name)
       for kind in CORRUPT
       for path_name in ('converter load_source', 'load_checkpoint into a model (Pretrained)',
                         'Runner.resume (--resume)', 'tools/test.py (strict load)')},
    'checkpoint whose head does not fit (tools/test.py)': _strict_test_case,
    '--resume with only damaged checkpoints': _nothing_valid_to_resume,
    'image: zero bytes (OpenCV)': _image_case('zero bytes', 'cv2'),
    'image: zero bytes (Pillow)': _image_case('zero bytes', 'pillow'),
    'image: truncated JPEG (Pillow)': _image_case('truncated', 'pillow'),
    'image: not an image (Pillow)': _image_case('not an image', 'pillow'),
    'image: truncated JPEG (OpenCV)': _image_case('truncated', 'cv2'),
    'label map: truncated PNG (Pillow)': _label_case('truncated'),
    'label map: zero bytes': _label_case('zero bytes'),
    "COCO: no 'images'": _coco_case(_drop('images'), "no list under 'images'"),
    "COCO: no 'annotations'": _coco_case(_drop('annotations'), "no list under 'annotations'"),
    "COCO: no 'categories'": _coco_case(_drop('categories'), "no list under 'categories'"),
    "COCO: categories match none of the classes": _coco_case(
        _rename_classes, r"none of its categories \['circle'.*classes \['cat', 'dog'\]"),
    'COCO: every image filtered out': _coco_case(_no_annotations_of_classes,
                                                 'all 2 images were filtered out'),
    'COCO: negative bbox width': _coco_case(_bad_bbox, r'annotation \d+: bbox must be'),
    'COCO: missing image file': _coco_case(_missing_image, 'gone.jpg.*does not exist'),
    '--cfg-options pretrianed=X': _option_case(dict(pretrianed='x.pth'),
                                               'Did you mean `pretrained`?'),
    '--cfg-options train_cfgg.max_epochs=2': _option_case(
        {'train_cfgg.max_epochs': 2}, 'Did you mean `train_cfg`?'),
    '--cfg-options default_hooks.checkpoint.intervl=1': _option_case(
        {'default_hooks.checkpoint.intervl': 1},
        'Did you mean `default_hooks.checkpoint.interval`?'),
    '--cfg-options model.head.num_classes=abc': _option_case(
        {'model.head.num_classes': 'abc'}, "num_classes='abc': expects a number"),
    '--cfg-options model.backbone.drop_path_rat=0.1': _option_case(
        {'model.backbone.drop_path_rat': 0.1}, 'Did you mean `model.backbone.drop_path_rate`?'),
    '--cfg-options param_scheduler.3.end=9': _option_case(
        {'param_scheduler.3.end': 9}, '`param_scheduler` is a list with indices'),
    '--cfg-options model.backbone.init_cfg.checkpointt=X': _option_case(
        {'model.backbone.init_cfg.checkpointt': 'x'},
        'Did you mean `model.backbone.init_cfg.checkpoint`?'),
}


MALFORMED_OPTIONS = ('foo', '=3', '+=1')


@pytest.mark.parametrize('name', list(BAD_INPUTS))
def test_bad_input_is_named(tmp_path, world, name):
    call, args, expected = BAD_INPUTS[name](tmp_path, world)
    with pytest.raises(Exception) as info:
        call(*args)
    assert re.search(expected, str(info.value), re.S), f'{type(info.value).__name__}: {info.value}'




@pytest.mark.parametrize('entry', MALFORMED_OPTIONS)
def test_malformed_cfg_option_is_a_usage_error(monkeypatch, capsys, entry):
    """No KEY=VALUE: argparse's usage error (exit status 2) saying what is expected."""
    monkeypatch.setattr(sys, 'argv', ['train.py', ATTO, '--cfg-options', entry])
    parser = ArgumentParser()
    parser.add_argument('config')
    with pytest.raises(SystemExit) as info:
        parse_run_args(parser)
    assert info.value.code == 2
    assert f'--cfg-options {entry!r}: expected KEY=VALUE' in capsys.readouterr().err


# --- faults: nothing lost ---------------------------------------------------------------

def _fault_disk_full(target):
    def fault(work_dir, monkeypatch):
        real = atomic_checkpoint.atomic_write

        def fail_on_target(path, data):
            if osp.basename(path) == target:
                raise OSError(28, f'could not write {path} (No space left on device)', path)
            real(path, data)

        monkeypatch.setattr(atomic_checkpoint, 'atomic_write', fail_on_target)
        with pytest.raises(OSError, match=re.escape(target) if target != 'last_checkpoint'
                           else 'last_checkpoint'):
            toy_runner(work_dir, max_iters=4, resume=True).train()
        monkeypatch.setattr(atomic_checkpoint, 'atomic_write', real)
    return fault


def _fault_nan_gradient(work_dir, monkeypatch):
    with pytest.raises(FloatingPointError, match=r'Last good checkpoint: .*iter_2\.pth'):
        toy_runner(work_dir, max_iters=4, resume=True, hooks=[NaNGradientAt(3)]).train()


class _NaNLossAt(NaNGradientAt):
    """Weights NaN before iteration ``at``: its loss is NaN."""

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at:
            runner.model.linear.weight.data.fill_(float('nan'))


def _fault_nan_loss(work_dir, monkeypatch):
    with pytest.raises(FloatingPointError, match=r'Non-finite loss at iteration 3'):
        toy_runner(work_dir, max_iters=4, resume=True, hooks=[_NaNLossAt(3)]).train()


def _damage_marker(how):
    def fault(work_dir, monkeypatch):
        marker = osp.join(work_dir, 'last_checkpoint')
        if how == 'missing':
            os.remove(marker)
        else:
            with open(marker, 'w') as f:
                f.write({'empty': '', 'garbage': '\x00\x01 not a path',
                         'names a missing file': osp.join(work_dir, 'iter_7.pth')}[how])
    return fault


def _damage_newest(how):
    def fault(work_dir, monkeypatch):
        newest = osp.join(work_dir, 'iter_2.pth')
        if how == 'NaN weights':
            checkpoint = load_checkpoint_file(newest)
            checkpoint['state_dict']['linear.bias'].fill_(float('inf'))
            torch.save(checkpoint, newest)
        else:
            _damage(newest, how)
    return fault


def _fault_resume_without_marker(work_dir, monkeypatch):
    """mmengine's own --resume (mim, upstream train.py) with last_checkpoint gone."""
    os.remove(osp.join(work_dir, 'last_checkpoint'))
    with pytest.raises(RuntimeError, match='nothing was resumed'):
        toy_runner(work_dir, max_iters=4, resume=True).train()


#: name -> (fault(work_dir, monkeypatch) applied after 2 saved iterations, the iteration
#: --resume must then continue from).
FAULTS = {
    'disk full writing a checkpoint': (_fault_disk_full('iter_3.pth'), 2),
    'disk full writing last_checkpoint': (_fault_disk_full('last_checkpoint'), 3),
    'NaN gradient under a finite loss': (_fault_nan_gradient, 2),
    'NaN loss': (_fault_nan_loss, 2),
    'last_checkpoint missing': (_damage_marker('missing'), 2),
    'last_checkpoint empty': (_damage_marker('empty'), 2),
    'last_checkpoint garbage': (_damage_marker('garbage'), 2),
    'last_checkpoint names a missing file': (_damage_marker('names a missing file'), 2),
    'newest checkpoint truncated': (_damage_newest('truncated'), 1),
    'newest checkpoint zero bytes': (_damage_newest('zero bytes'), 1),
    'newest checkpoint holds Inf weights': (_damage_newest('NaN weights'), 1),
    "mmengine's --resume without last_checkpoint": (_fault_resume_without_marker, 2),
}


@pytest.mark.parametrize('name', list(FAULTS))
def test_fault_loses_nothing(tmp_path, monkeypatch, name):
    work_dir = str(tmp_path)
    toy_runner(work_dir, max_iters=2, max_keep_ckpts=2).train()
    fault, resume_at = FAULTS[name]
    fault(work_dir, monkeypatch)
    assert not [f for f in os.listdir(work_dir) if f.endswith('.tmp')]
    found, why = find_resume_checkpoint(work_dir)  # what tools/train.py --resume does
    assert found == osp.join(work_dir, f'iter_{resume_at}.pth'), why
    runner = toy_runner(work_dir, max_iters=4, max_keep_ckpts=2, resume=True, load_from=found)
    runner.train()
    assert runner.iter == 4 and training_checkpoint_problem(osp.join(work_dir, 'iter_4.pth')) == ''


#: Moments after a checkpoint's temporary file appears at which the slow test kills the run
#: (seconds): while it is written, flushed, renamed, while last_checkpoint is written and the
#: old checkpoint removed, and in the next iteration's serialisation.
KILL_MOMENTS = (0, 0.005, 0.01, 0.02, 0.04, 0.08, 0.15, 0.3, 0.6, 1.0)


def _kill_config(data_root: str, path: str) -> None:
    """A tiny classifier with a 6.4M-parameter head, so that a checkpoint (weights and AdamW
    state, ~77 MB) takes long enough to write to be killed midway; saved every iteration
    with max_keep_ckpts=1 as the demo configs do."""
    loader = dict(
        batch_size=4, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
        dataset=dict(type='CustomDataset', data_root=data_root, ann_file='meta/train.txt',
                     data_prefix='train', pipeline=[dict(type='LoadImageFromFile'),
                                                    dict(type='PackInputs')]))
    Config(dict(
        default_scope='mmpretrain',
        custom_imports=dict(imports=['mmcnx2', 'mmcnx2.engine.safe_checkpoint_loading'],
                            allow_failed_imports=False),
        model=dict(type='ImageClassifier',
                   data_preprocessor=dict(num_classes=100000, mean=[128] * 3, std=[64] * 3),
                   backbone=dict(type='ConvNeXtV2', arch=dict(depths=[1, 1, 1, 1],
                                                              channels=[8, 16, 32, 64])),
                   head=dict(type='LinearClsHead', num_classes=100000, in_channels=64)),
        train_dataloader=loader,
        train_cfg=dict(by_epoch=False, max_iters=200),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-4)),
        default_hooks=dict(checkpoint=dict(type='AtomicCheckpointHook', interval=1,
                                           by_epoch=False, max_keep_ckpts=1),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='FiniteLossHook')],
        randomness=dict(seed=0))).dump(path)


@pytest.mark.slow
def test_sigkill_during_checkpoint_saves_loses_nothing(tmp_path):
    """Kill a training at each of :data:`KILL_MOMENTS` of a save, resuming in between:
    after every kill last_checkpoint names a complete, valid checkpoint no older than the
    last finished save, no visible file is partial, and --resume continues from the newest
    valid one; a last run finishes from there."""
    data = make_synthetic_world(str(tmp_path / 'data'), num_train=8, num_val=1, image_size=32,
                                layouts=('imagenet', ))['imagenet']
    cfg, work_dir = str(tmp_path / 'kill.py'), str(tmp_path / 'work')
    _kill_config(data, cfg)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    completed = 0
    for moment in KILL_MOMENTS:
        proc = subprocess.Popen(
            [sys.executable, 'tools/train.py', cfg, '--work-dir', work_dir, '--resume'],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        target = completed + 2  # the second save of this process
        deadline = time.time() + 300
        while not any(f.startswith(f'.iter_{target}.pth.') for f in _listdir(work_dir)):
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
            time.sleep(0.001)
        time.sleep(moment)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            named = f.read()
        saved = int(re.search(r'iter_(\d+)\.pth', named)[1])
        assert saved >= target - 1, (moment, named)
        # Every visible file is complete (a killed save leaves at most a hidden .tmp file);
        # --resume takes the one last_checkpoint names, or a newer one saved just before
        # last_checkpoint was replaced.
        for name in _listdir(work_dir):
            if name.endswith('.pth'):
                assert training_checkpoint_problem(osp.join(work_dir, name)) == '', name
        found, why = find_resume_checkpoint(work_dir)
        completed = int(re.search(r'iter_(\d+)\.pth', found)[1])
        assert completed >= saved, why
    run = subprocess.run(
        [sys.executable, 'tools/train.py', cfg, '--work-dir', work_dir, '--resume',
         '--cfg-options', f'train_cfg.max_iters={completed + 2}'],
        cwd=REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert osp.exists(osp.join(work_dir, f'iter_{completed + 2}.pth'))


def _listdir(directory):
    return os.listdir(directory) if osp.isdir(directory) else []


# --- the figures ------------------------------------------------------------------------

FIGURES = dict(
    faults=len(FAULTS) + len(KILL_MOMENTS),
    bad_inputs=len(BAD_INPUTS) + len(MALFORMED_OPTIONS),
    crafted_loads=CRAFTED_LOADS,
)


def test_readme_states_the_figures():
    """The README quotes the sizes of the catalogues above; each test of this file asserts
    that every case of its catalogue ends well, so the figures hold when they all pass."""
    with open(osp.join(REPO, 'README.md')) as f:
        readme = f.read()
    section = readme[readme.index('## Reliability'):]
    section = section[:section.index('\n## ', 3)]
    faults, bad, crafted = FIGURES['faults'], FIGURES['bad_inputs'], FIGURES['crafted_loads']
    assert f'faults survived with nothing lost: **{faults}/{faults}**' in section, FIGURES
    assert f'bad inputs with a clear named error: **{bad}/{bad}**' in section, FIGURES
    assert f'code executions from a checkpoint: **0** (of {crafted} crafted loads)' in section, (
        FIGURES)
