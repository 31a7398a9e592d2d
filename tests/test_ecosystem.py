# Copyright (c) mmcnx2 contributors. All rights reserved.
"""What a user of the OpenMMLab tools meets around the model: the cost of `import mmcnx2`,
the upstream dataset browsers on our configs, `init_weights` by hand, and the AMP configs on
a machine without a GPU (our tools and mmdet's/mmseg's own train.py)."""
import glob
import json
import logging
import os
import os.path as osp
import subprocess
import sys
import uuid
from contextlib import contextmanager

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import AmpOptimWrapper, OptimWrapper, build_optim_wrapper
from mmengine.registry import DefaultScope

from mmcnx2.datasets import make_synthetic_world
from mmcnx2.engine.optimizers import amp_fallback

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = osp.join(REPO, 'configs', 'demo')
DEMO_FCMAE = osp.join(DEMO, 'fcmae_convnextv2-atto_1xb16-200it_synthetic-96.py')
DEMO_FINETUNE = osp.join(DEMO, 'convnextv2-atto_fcmae-pre_1xb16-150it_synthetic-96.py')
DEMO_MASK_RCNN = osp.join(DEMO, 'mask-rcnn_convnextv2-atto_fpn_1xb4-150it_synthetic-96.py')
DEMO_UPERNET = osp.join(DEMO, 'upernet_convnextv2-atto_1xb4-150it_synthetic-96x96.py')
DET_SEG_CONFIGS = sorted(
    glob.glob(osp.join(REPO, 'configs', 'mask_rcnn', '*.py')) +
    glob.glob(osp.join(REPO, 'configs', 'upernet', '*.py')))


def upstream_tool(package, *path):
    """A tool script as the package ships it (``site-packages/<package>/.mim/tools/...``)."""
    root = subprocess.run([sys.executable, '-c', f'import {package}; print({package}.__file__)'],
                          capture_output=True, text=True, check=True).stdout.strip()
    return osp.join(osp.dirname(root), '.mim', 'tools', *path)


def run(*cmd, timeout=600):
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


@contextmanager
def captured_log():
    """The messages logged to mmengine's current logger (a fresh one) inside the block."""
    logger = MMLogger.get_instance(f'capture-{uuid.uuid4().hex}', log_level='INFO')
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    return make_synthetic_world(
        str(tmp_path_factory.mktemp('world')), num_train=8, num_val=2, image_size=96)


# ------------------------------------------------------------------ import cost
@pytest.mark.slow
def test_import_mmcnx2_leaves_the_codebases_models_and_datasets_unimported():
    """mmpretrain.models imports mmdet.models and mmdet.datasets (~10 s on 2 cores): what
    needs them is registered on first look-up instead of on `import mmcnx2`."""
    heavy = ['mmdet.datasets', 'mmdet.models', 'mmpretrain.models', 'mmseg.datasets',
             'mmseg.models', 'mmcnx2.models']
    out = run(sys.executable, '-c',
              f'import sys, mmcnx2; print(sorted(set({heavy!r}) & set(sys.modules)))')
    assert out.strip().splitlines()[-1] == '[]'


@pytest.mark.slow
def test_deferred_modules_are_found_through_every_registry():
    """Only `import mmcnx2` (what `custom_imports` does), then the look-ups the configs make:
    models from every scope, the mmdet/mmseg datasets, the layer-decay and FSDP pieces."""
    script = """
import json
import mmcnx2
from mmengine.registry import FUNCTIONS, OPTIM_WRAPPER_CONSTRUCTORS, DefaultScope
from mmdet.registry import DATASETS as DET_DATASETS, MODELS as DET_MODELS
from mmpretrain.registry import MODELS as PRETRAIN_MODELS
from mmseg.registry import MODELS as SEG_MODELS, VISUALIZERS as SEG_VISUALIZERS
found = {}
with DefaultScope.overwrite_default_scope('mmdet'):
    found['det'] = [DET_MODELS.get('ConvNeXtV2'), DET_MODELS.get('mmpretrain.FCMAE'),
                    DET_DATASETS.get('CheckedCocoDataset'),
                    OPTIM_WRAPPER_CONSTRUCTORS.get('LayerDecayOptimWrapperConstructor')]
with DefaultScope.overwrite_default_scope('mmseg'):
    found['seg'] = [SEG_MODELS.get('ConvNeXtV2'),
                    SEG_VISUALIZERS.get('ContiguousSegLocalVisualizer')]
found['pretrain'] = [PRETRAIN_MODELS.get('FCMAE'), PRETRAIN_MODELS.get('FCMAEDecoder')]
found['root'] = [FUNCTIONS.get('convnextv2_block_wrap_policy'),
                 OPTIM_WRAPPER_CONSTRUCTORS.get('FSDPOptimWrapperConstructor')]
print(json.dumps({k: [f'{o.__module__}.{o.__name__}' for o in v] for k, v in found.items()}))
"""
    found = json.loads(run(sys.executable, '-c', script).strip().splitlines()[-1])
    assert found == {
        'det': ['mmcnx2.models.backbones.convnext_v2.ConvNeXtV2',
                'mmcnx2.models.selfsup.fcmae.FCMAE',
                'mmcnx2.datasets.checked_coco.CheckedCocoDataset',
                'mmcnx2.engine.optimizers.layer_decay.LayerDecayOptimWrapperConstructor'],
        'seg': ['mmcnx2.models.backbones.convnext_v2.ConvNeXtV2',
                'mmcnx2.visualization.seg_local_visualizer.ContiguousSegLocalVisualizer'],
        'pretrain': ['mmcnx2.models.selfsup.fcmae.FCMAE',
                     'mmcnx2.models.necks.fcmae_decoder.FCMAEDecoder'],
        'root': ['mmcnx2.engine.fsdp.convnextv2_block_wrap_policy',
                 'mmcnx2.engine.fsdp.FSDPOptimWrapperConstructor'],
    }


# ------------------------------------------------------------------ dataset browsers
@pytest.mark.slow
def test_mmseg_browse_dataset_draws_the_upernet_data(world, tmp_path):
    """mmseg's browse_dataset.py failed on our UperNet configs with every OpenCV version
    ("Layout of the output array img is incompatible with cv::Mat")."""
    ade = world['ade']
    run(sys.executable, upstream_tool('mmseg', 'analysis_tools', 'browse_dataset.py'),
        DEMO_UPERNET, '--not-show', '--output-dir', str(tmp_path), '--cfg-options',
        f'train_dataloader.dataset.data_root={ade}')
    drawn = sorted(os.listdir(tmp_path))
    assert drawn == [f'ADE_train_{i:08d}.jpg' for i in range(1, 9)]


@pytest.mark.slow
@pytest.mark.parametrize('config', [DEMO_FINETUNE, DEMO_FCMAE], ids=osp.basename)
def test_mmpretrain_browse_dataset_draws_the_classification_and_fcmae_data(
        config, world, tmp_path):
    """It failed with "Visualizer.__init__() got an unexpected keyword argument '_scope_'"
    (and, with matplotlib 3.11, on a private matplotlib function)."""
    run(sys.executable, upstream_tool('mmpretrain', 'visualization', 'browse_dataset.py'),
        config, '--not-show', '--output-dir', str(tmp_path), '--show-number', '3',
        '--cfg-options', f'train_dataloader.dataset.data_root={world["imagenet"]}')
    assert len(os.listdir(tmp_path)) == 3


# ------------------------------------------------------------------ init_weights
def test_init_weights_by_hand_reports_no_false_lines():
    from mmengine.model import BaseModule

    from mmcnx2.models import ConvNeXtV2
    torch.manual_seed(0)
    backbone = ConvNeXtV2(arch='atto')
    with captured_log() as messages:
        backbone.init_weights()
    # Before: 138 lines, one per parameter, "The value is the same before and after
    # calling `init_weights` of ConvNeXtV2" (it was changed right after they were written).
    assert [m for m in messages if 'same before and after' in m] == []
    stem = backbone.downsample_layers[0][0]
    assert stem.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert stem.bias.abs().max().item() == 0.

    class Model(BaseModule):

        def __init__(self):
            super().__init__()
            self.backbone = ConvNeXtV2(arch='atto')

    model = Model()
    with captured_log() as messages:
        model.init_weights()
    # One message per parameter: '\n{name} - {shape}: \n{what initialised it} \n '.
    report = {m.split(' - ')[0].strip(): m.split('\n')[2].strip() for m in messages
              if ' - torch.Size' in m}
    assert len(report) == len(list(model.parameters()))
    weights = [f'{n}.weight' for n, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weights) == 4 + 3 * 12  # stem + 3 downsamples, 3 per block
    assert {report[w] for w in weights} == {
        'Initialized by user-defined `init_weights` in ConvNeXtV2'}


# ------------------------------------------------------------------ AMP configs on a CPU
@pytest.fixture(scope='module')
def detector_like():
    """What the optim wrapper needs of a model: a ConvNeXt V2 backbone and a head."""
    from mmcnx2.models import ConvNeXtV2

    class Model(nn.Module):

        def __init__(self):
            super().__init__()
            self.backbone = ConvNeXtV2(arch='atto', out_indices=(0, 1, 2, 3),
                                       gap_before_final_norm=False)
            self.head = nn.Conv2d(320, 8, 1)

    return Model()


# The atto configs in the fast loop; the others (same bases, ~1.5 s each) with the slow tests.
@pytest.mark.parametrize('path', [
    pytest.param(path, marks=() if '-atto_' in path else pytest.mark.slow)
    for path in DET_SEG_CONFIGS], ids=osp.basename)
def test_every_amp_config_builds_an_fp32_optim_wrapper_on_a_cpu(path, detector_like,
                                                                 monkeypatch):
    """The configs' own optim_wrapper, unchanged (before: `AmpOptimWrapper is only available
    training on gpu`, and the README's `optim_wrapper.type=OptimWrapper` failed on UperNet's
    `loss_scale`)."""
    monkeypatch.setattr(amp_fallback, 'amp_available', lambda: False)  # also on a GPU host
    cfg = Config.fromfile(path)
    assert cfg.optim_wrapper.type == 'AmpOrFp32OptimWrapper'
    with captured_log() as messages, DefaultScope.overwrite_default_scope(cfg.default_scope):
        wrapper = build_optim_wrapper(detector_like, cfg.optim_wrapper)
    assert type(wrapper) is OptimWrapper
    assert any('AmpOrFp32OptimWrapper: no CUDA' in m and 'fp32' in m for m in messages)
    # The config's optimizer and layer decay, as with AMP.
    names = {id(p): n for n, p in detector_like.named_parameters()}
    groups = {names[id(p)]: g for g in wrapper.optimizer.param_groups for p in g['params']}
    stem, head = groups['backbone.downsample_layers.0.0.weight'], groups['head.weight']
    assert type(wrapper.optimizer) is torch.optim.AdamW
    assert stem['lr'] < head['lr'] == pytest.approx(cfg.optim_wrapper.optimizer.lr)


def test_with_an_accelerator_the_configs_train_with_amp(monkeypatch, detector_like):
    from mmengine.optim.optimizer import amp_optimizer_wrapper
    monkeypatch.setattr(amp_fallback, 'amp_available', lambda: True)
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'upernet',
                                   'upernet_convnextv2-atto_8xb2-amp-160k_ade20k-512x512.py'))
    with DefaultScope.overwrite_default_scope('mmseg'):
        wrapper = build_optim_wrapper(detector_like, cfg.optim_wrapper)
    assert type(wrapper) is AmpOptimWrapper
    assert isinstance(wrapper.loss_scaler, torch.amp.GradScaler)


def test_amp_false_builds_a_plain_wrapper_even_with_an_accelerator(monkeypatch, detector_like):
    """What the FSDP configs set: FSDP's bf16 replaces autocast and loss scaling."""
    monkeypatch.setattr(amp_fallback, 'amp_available', lambda: True)
    cfg = Config.fromfile(osp.join(
        REPO, 'configs', 'upernet', 'fsdp',
        'upernet_convnextv2-huge_fsdp_8xb2-bf16-160k_ade20k-640x640.py'))
    with captured_log() as messages, DefaultScope.overwrite_default_scope('mmseg'):
        wrapper = build_optim_wrapper(detector_like, cfg.optim_wrapper)
    assert type(wrapper) is OptimWrapper
    assert not any('AmpOrFp32OptimWrapper' in m for m in messages)  # nothing to warn about
    assert wrapper.optimizer.defaults['lr'] == cfg.optim_wrapper.optimizer.lr


@pytest.mark.slow
@pytest.mark.parametrize('package, config, layout', [
    ('mmseg', DEMO_UPERNET, 'ade'),
    ('mmdet', DEMO_MASK_RCNN, 'coco'),
], ids=['mmseg-train.py-upernet', 'mmdet-train.py-mask-rcnn'])
def test_upstream_train_runs_the_amp_configs_on_a_cpu(package, config, layout, world, tmp_path):
    """mmdet's and mmseg's own tools/train.py (what `mim train mmdet|mmseg` runs) on the
    demo configs, whose optim_wrapper is the real configs' (AMP with a GPU)."""
    root = world[layout]
    data = [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val')]
    if layout == 'coco':
        data.append(f'val_evaluator.ann_file={root}/annotations/instances_val2017.json')
    log = run(sys.executable, upstream_tool(package, 'train.py'), config, '--work-dir',
              str(tmp_path), '--cfg-options', 'model.backbone.init_cfg=None',
              'train_cfg.max_iters=2', 'default_hooks.logger.interval=1',
              'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
              *data)
    assert 'AmpOrFp32OptimWrapper: no CUDA, NPU, MLU or MUSA device' in log
    assert 'Iter(train) [2/2]' in log
    assert osp.isfile(tmp_path / 'iter_2.pth')
