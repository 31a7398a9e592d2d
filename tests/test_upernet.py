# Copyright (c) mmcnx2 contributors. All rights reserved.
"""UperNet + ConvNeXt V2 (configs/upernet): the configs, the training and test tools on a
generated ADE20K-layout set, and the label-map checks.

The trainings use a tiny config written to tmp_path (helpers_runs.write_tiny_upernet_config)
that inherits the real atto config (absolute ``_base_`` path) and changes only what a CPU
needs: 64 px crops, narrow heads, BN instead of SyncBN (CPU gloo has no SyncBN), fp32 instead
of AMP (AmpOptimWrapper needs a GPU) and a short schedule; model, layer decay and the ADE20K
pipelines stay the real ones.
"""
import glob
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from mmcnx2.datasets.synthetic import make_synthetic_world
from helpers_runs import free_port, logged_losses, write_tiny_upernet_config
from mmcnx2.models import ConvNeXtV2

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(REPO, 'configs', 'upernet')
ATTO = osp.join(CONFIG_DIR, 'upernet_convnextv2-atto_8xb2-amp-160k_ade20k-512x512.py')
CONFIGS = sorted(glob.glob(osp.join(CONFIG_DIR, '*.py')))

# Exactly what mmseg's upstream tools/train.py and tools/test.py (--tta) do with a config:
# Config.fromfile + Runner.from_cfg, no import of mmcnx2 (custom_imports brings it in).
UPSTREAM_SCRIPT = """
import json, os.path as osp, sys
from mmengine.config import Config
from mmengine.runner import Runner

config, work_dir, iters = sys.argv[1], sys.argv[2], int(sys.argv[3])


def runner(name, checkpoint=None, tta=False):
    cfg = Config.fromfile(config)
    cfg.launcher, cfg.work_dir, cfg.load_from = 'none', osp.join(work_dir, name), checkpoint
    if tta:  # mmseg tools/test.py --tta
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    return Runner.from_cfg(cfg)


untrained = runner('untrained')
untrained.model.init_weights()
metrics = dict(untrained=float(untrained.test()['mIoU']))
runner('train').train()
checkpoint = osp.join(work_dir, 'train', f'iter_{iters}.pth')
metrics['single_scale'] = float(runner('test', checkpoint).test()['mIoU'])
metrics['multi_scale'] = float(runner('tta', checkpoint, tta=True).test()['mIoU'])
print('METRICS', json.dumps(metrics))
"""


def run(cmd, timeout=300, **env):
    out = subprocess.run(
        cmd,
        cwd=REPO,
        env=dict(os.environ, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout)
    assert out.returncode == 0, f'{" ".join(cmd)} failed:\n{out.stdout[-5000:]}'
    return out.stdout


@pytest.fixture(scope='module')
def ade_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic')
    return make_synthetic_world(
        str(root), num_train=48, num_val=16, image_size=64, layouts=('ade', ))['ade']


# atto in the fast loop; the other sizes (~2 s each) with the slow tests.
@pytest.mark.parametrize('path', [
    pytest.param(path, marks=() if '-atto_' in path else pytest.mark.slow) for path in CONFIGS],
    ids=osp.basename)
def test_config_follows_recipe(path):
    """Every leaf is the paper's recipe for its size, built on mmseg's own bases."""
    name = osp.basename(path)
    arch, crop = re.match(r'upernet_convnextv2-(\w+)_8xb2-amp-160k_ade20k-(\d+)x\d+', name).groups()
    cfg = Config.fromfile(path)
    channels = ConvNeXtV2.arch_settings[arch]['channels']
    backbone = cfg.model.backbone
    assert backbone.type == 'ConvNeXtV2' and backbone.arch == arch
    assert backbone.out_indices == (0, 1, 2, 3) and not backbone.gap_before_final_norm
    assert backbone.init_cfg == dict(
        type='Pretrained', checkpoint=cfg.pretrained, prefix='backbone.')
    assert 0.1 <= backbone.drop_path_rate <= 0.4
    assert cfg.model.decode_head.type == 'UPerHead'
    assert cfg.model.decode_head.in_channels == channels
    assert cfg.model.auxiliary_head.type == 'FCNHead'
    assert cfg.model.auxiliary_head.in_channels == channels[2]
    assert cfg.model.decode_head.num_classes == cfg.model.auxiliary_head.num_classes == 150
    assert cfg.crop_size == (int(crop), ) * 2 == cfg.model.data_preprocessor.size
    assert cfg.model.test_cfg.crop_size == cfg.crop_size

    optim = cfg.optim_wrapper
    assert optim.type == 'AmpOrFp32OptimWrapper'
    assert optim.optimizer.type == 'AdamW' and optim.optimizer.weight_decay == 0.05
    assert 1e-4 <= optim.optimizer.lr <= 3e-4
    assert optim.constructor == 'LayerDecayOptimWrapperConstructor'
    assert optim.paramwise_cfg == dict(
        layer_decay_rate=0.9, decay_type='stage_wise',
        num_layers=6 if arch in ('atto', 'tiny') else 12, flat_decay_mult=0.)
    assert cfg.train_cfg.max_iters == 160000 and cfg.param_scheduler[-1].end == 160000
    assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs = 16

    pipelines = dict(
        train=cfg.train_dataloader.dataset.pipeline,
        test=cfg.test_dataloader.dataset.pipeline,
        tta=[step[0] for step in cfg.tta_pipeline[1].transforms])
    for steps in pipelines.values():
        types = [step.type for step in steps]
        assert types[types.index('LoadAnnotations') + 1] == 'CheckSegMap'
    assert [t.scale_factor for t in cfg.tta_pipeline[1].transforms[0]] == [0.75, 1.0, 1.25]
    assert [t.prob for t in cfg.tta_pipeline[1].transforms[1]] == [0., 1.]


def test_metafile_and_readme_list_every_config():
    import yaml
    with open(osp.join(CONFIG_DIR, 'metafile.yml')) as f:
        models = yaml.safe_load(f)['Models']
    assert sorted(osp.join(REPO, m['Config']) for m in models) == CONFIGS
    with open(osp.join(CONFIG_DIR, 'README.md')) as f:
        readme = f.read()
    assert all(f'({osp.basename(path)})' in readme for path in CONFIGS)

def test_layer_decay_groups():
    """The atto config's optimizer: lr scaled per stage, no decay on 1-D params (every
    parameter against the recipe: tests/test_recipes.py)."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS

    cfg = Config.fromfile(ATTO)
    cfg.model.backbone.init_cfg = None
    cfg.model.decode_head.norm_cfg = cfg.model.auxiliary_head.norm_cfg = dict(type='BN')
    cfg.optim_wrapper.type = 'OptimWrapper'  # AMP needs a GPU; the groups are the same
    cfg.optim_wrapper.pop('loss_scale')
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
        optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {names[id(p)]: g for g in optimizer.param_groups for p in g['params']}
    lr = cfg.optim_wrapper.optimizer.lr
    # atto 'stage_wise', num_layers 6: downsample layers id 0, stage i id i + 1, heads 7:
    # scale 0.9**(7 - id).
    stem = groups['backbone.downsample_layers.0.0.weight']
    assert stem['lr'] == pytest.approx(lr * 0.9**7) and stem['weight_decay'] == 0.05
    assert groups['backbone.downsample_layers.3.1.weight']['lr'] == pytest.approx(lr * 0.9**7)
    last = groups['backbone.stages.3.1.pointwise_conv1.weight']
    assert last['lr'] == pytest.approx(lr * 0.9**3)
    assert groups['backbone.stages.2.4.grn.gamma']['lr'] == pytest.approx(lr * 0.9**4)
    assert groups['backbone.stages.2.4.grn.gamma']['weight_decay'] == 0.
    head = groups['decode_head.conv_seg.weight']
    assert head['lr'] == pytest.approx(lr) and head['weight_decay'] == 0.05
    assert groups['decode_head.conv_seg.bias']['weight_decay'] == 0.


def _dataset(cfg_path, data_root):
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS

    cfg = Config.fromfile(cfg_path)
    dataset = dict(cfg.test_dataloader.dataset, data_root=data_root)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return DATASETS.build(dataset)


def _copy_ade(src, dst, n):
    """The first ``n`` validation images and label maps of ``src`` in a new ADE20K tree."""
    paths = []
    for kind, ext in (('images', 'jpg'), ('annotations', 'png')):
        os.makedirs(osp.join(dst, kind, 'validation'))
        for name in sorted(os.listdir(osp.join(src, kind, 'validation')))[:n]:
            shutil.copy(osp.join(src, kind, 'validation', name),
                        osp.join(dst, kind, 'validation', name))
            paths.append(osp.join(dst, kind, 'validation', name))
    return paths[n:]  # the label maps


@pytest.mark.parametrize('defect', ['out_of_range', 'size_mismatch', 'rgb'])
def test_bad_label_map_names_file(defect, ade_root, tmp_path):
    cfg_path = write_tiny_upernet_config(tmp_path / 'tiny.py', ade_root, 1, 1e-3, 2, 1)
    root = str(tmp_path / 'ade')
    good, bad = _copy_ade(ade_root, root, 2)
    dataset = _dataset(cfg_path, root)
    labels = dataset[0]['data_samples'].gt_sem_seg.data
    assert labels.shape == (1, 64, 64)
    assert set(labels.unique().tolist()) == {1, 3, 4, 255}  # file values 0 (ignored), 2, 4, 5

    label = np.array(Image.open(bad))
    if defect == 'out_of_range':  # file values 1..5 are the classes; 7 and 200 are not
        label[:3, :3], label[-1, -1] = 7, 200
        message = r'labels \[7, 200\].* valid values in the file are 1\.\.5'
    elif defect == 'size_mismatch':
        label = label[:48]
        message = r'shape \(48, 64\) but its image .*ADE_val_00000002\.jpg is 64x64'
    else:
        label = np.repeat(label[..., None], 3, axis=2)
        message = r'shape \(64, 64, 3\) .*single-channel'
    Image.fromarray(label).save(bad)
    with pytest.raises(ValueError, match=re.escape(bad) + '.*' + message):
        dataset[1]


@pytest.mark.slow
def test_dist_train_lowers_loss_and_test_reports_miou(ade_root, tmp_path):
    """tools/dist_train.sh (2 CPU processes, gloo) then tools/test.py."""
    iters = 40
    cfg = write_tiny_upernet_config(tmp_path / 'tiny.py', ade_root, iters, 2e-3, 4, 5)
    work_dir = str(tmp_path / 'work')
    run(['bash', 'tools/dist_train.sh', cfg, '2', '--work-dir', work_dir],
        PORT=free_port(), OMP_NUM_THREADS='1')
    losses = logged_losses(work_dir)
    assert len(losses) == iters // 5
    assert losses[-1] < 0.7 * losses[0], losses

    out = run([sys.executable, 'tools/test.py', cfg, osp.join(work_dir, f'iter_{iters}.pth'),
               '--work-dir', str(tmp_path / 'test')], OMP_NUM_THREADS='1')
    miou = float(re.search(r'mIoU: ([\d.]+)', out).group(1))
    print('losses', losses, 'mIoU', miou)
    assert 20. < miou <= 100.  # the untrained model scores 6.1 (slow test below)


@pytest.mark.slow
def test_longer_training_beats_untrained_with_upstream_runner(ade_root, tmp_path):
    """As mmseg's own tools/train.py and test.py (--tta) run a config."""
    iters = 100
    cfg = write_tiny_upernet_config(tmp_path / 'tiny.py', ade_root, iters, 2e-3, 8, 25)
    # One thread: a 2-thread process on a busy 2-core machine slows down many-fold.
    out = run([sys.executable, '-c', UPSTREAM_SCRIPT, cfg, str(tmp_path / 'work'), str(iters)],
              timeout=600, OMP_NUM_THREADS='1')
    metrics = json.loads(out.split('METRICS ')[-1].splitlines()[0])
    print(metrics)
    assert metrics['single_scale'] > metrics['untrained'] + 20, metrics
    assert metrics['multi_scale'] > metrics['untrained'] + 20, metrics

