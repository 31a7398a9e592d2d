# Copyright (c) mmcnx2 contributors. All rights reserved.
"""ImageNet fine-tuning configs: recipe per size, layer decay, the FCMAE -> fine-tune chain."""
import os.path as osp
from argparse import Namespace

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from mmpretrain.registry import MODELS

from mmcnx2.datasets import CLASSES, make_synthetic_world
from mmcnx2.engine import load_cfg, load_checkpoint_file

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = osp.join(REPO, 'configs/convnextv2')
TINY = dict(depths=[1, 1, 1, 1], channels=[8, 16, 32, 64])


pytestmark = pytest.mark.usefixtures('mmpretrain_scope')

# size: (config, epochs, warmup, base lr, layer decay, decay type, drop path, mixup/cutmix,
#        smoothing, weight decay), from the recipe table in the spec.
RECIPE = {
    'atto': ('8xb128-600e', 600, 0, 2e-4, 0.9, 'block', 0.1, None, 0.2, 0.3),
    'femto': ('8xb128-600e', 600, 0, 2e-4, 0.9, 'block', 0.0, (0.3, 0.3), 0.2, 0.05),
    'pico': ('8xb128-600e', 600, 0, 2e-4, 0.9, 'block', 0.0, (0.3, 0.3), 0.2, 0.3),
    'nano': ('8xb128-600e', 600, 0, 2e-4, 0.9, 'block', 0.1, (0.5, 0.5), 0.2, 0.3),
    'tiny': ('8xb128-300e', 300, 40, 8e-4, 0.9, 'block', 0.2, (0.8, 1.0), 0.1, 0.05),
    'base': ('8xb128-100e', 100, 20, 6.25e-4, 0.6, 'group', 0.1, (0.8, 1.0), 0.1, 0.05),
    'large': ('8xb128-100e', 100, 20, 6.25e-4, 0.6, 'group', 0.2, (0.8, 1.0), 0.1, 0.05),
    'huge': ('8xb128-50e', 50, 10, 1.25e-3, 0.75, 'group', 0.3, (0.8, 1.0), 0.1, 0.05),
}
WIDTH = dict(atto=320, femto=384, pico=512, nano=640, tiny=768, base=1024, large=1536,
             huge=2816)


def _config(size):
    return osp.join(CONFIGS, f'convnextv2-{size}_fcmae-pre_{RECIPE[size][0]}_in1k.py')


def _load(path, **options):
    return load_cfg(Namespace(config=path, cfg_options=options or None, launcher='none',
                              work_dir=None))


@pytest.mark.parametrize('size', list(RECIPE))
def test_recipe_of_each_size(size):
    _, epochs, warmup, base_lr, decay, decay_type, drop_path, mix, smooth, wd = RECIPE[size]
    cfg = Config.fromfile(_config(size))
    assert cfg.train_cfg.max_epochs == epochs
    schedulers = {s.type: s for s in cfg.param_scheduler}
    if warmup:
        assert schedulers['LinearLR'].end == schedulers['CosineAnnealingLR'].begin == warmup
    else:
        assert 'LinearLR' not in schedulers
    assert schedulers['CosineAnnealingLR'].get('end') is None  # runs to max_epochs
    optim = cfg.optim_wrapper
    assert optim.optimizer.type == 'AdamW'
    assert optim.optimizer.lr == pytest.approx(base_lr * 1024 / 256)
    assert cfg.auto_scale_lr.base_batch_size == 1024 == 8 * cfg.train_dataloader.batch_size
    assert optim.optimizer.weight_decay == wd
    assert optim.constructor == 'LayerDecayOptimWrapperConstructor'
    assert optim.paramwise_cfg == dict(layer_decay_rate=decay, decay_type=decay_type,
                                       flat_decay_mult=0.0)
    backbone, head = cfg.model.backbone, cfg.model.head
    assert backbone.arch == size and backbone.drop_path_rate == drop_path
    assert head.in_channels == WIDTH[size] and head.loss.label_smooth_val == smooth
    assert head.init_cfg.std == pytest.approx(0.02 * 0.001)
    if mix is None:
        assert cfg.model.train_cfg is None
    else:
        assert [(a.type, a.alpha) for a in cfg.model.train_cfg.augments] == [
            ('Mixup', mix[0]), ('CutMix', mix[1])]
    # The chain: the FCMAE run of the same size, loaded strictly under `backbone.`.
    assert cfg.pretrained == (f'work_dirs/fcmae_convnextv2-{size}_64xb64-coslr-800e_in1k/'
                              'epoch_800.pth')
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=cfg.pretrained,
                                     prefix='backbone.')
    hooks = {h.type: h for h in cfg.custom_hooks}
    assert hooks['EMAHook'].momentum == 1e-4  # decay 0.9999
    assert {'FiniteLossHook', 'ExactResumeHook'} <= set(hooks)
    train = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
    assert train['RandAugment'].magnitude_level == 9
    assert train['RandAugment'].magnitude_std == 0.5
    assert train['RandAugment'].policies == 'timm_increasing'
    assert train['RandomErasing'].erase_prob == 0.25
    test = {t.type: t for t in cfg.test_dataloader.dataset.pipeline}
    assert test['ResizeEdge'].scale == 256 and test['CenterCrop'].crop_size == 224


def test_pretrained_override_reaches_init_cfg(tmp_path):
    cfg = _load(_config('tiny'), pretrained='my/fcmae.pth')
    assert cfg.pretrained == cfg.model.backbone.init_cfg.checkpoint == 'my/fcmae.pth'
    # An explicit option next to it still wins.
    cfg = _load(_config('tiny'), pretrained='a.pth', **{
        'model.backbone.init_cfg.checkpoint': 'b.pth'})
    assert (cfg.pretrained, cfg.model.backbone.init_cfg.checkpoint) == ('a.pth', 'b.pth')
    # A leaf that changes `pretrained` without restating its use is refused.
    stale = tmp_path / 'stale.py'
    stale.write_text(f"_base_ = '{_config('tiny')}'\npretrained = 'other.pth'\n")
    with pytest.raises(ValueError, match='used nowhere else'):
        _load(str(stale))


def _optimizer_groups(size, depths):
    """{param name: (lr scale, weight decay)} for the size's optim_wrapper on a thin model."""
    cfg = Config.fromfile(_config(size))
    model = MODELS.build(
        dict(type='ImageClassifier',
             backbone=dict(type='ConvNeXtV2', arch=dict(depths=depths, channels=[4, 8, 8, 8])),
             head=dict(type='LinearClsHead', num_classes=5, in_channels=8)))
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    base_lr = cfg.optim_wrapper.optimizer.lr
    names = {p: n for n, p in model.named_parameters()}
    return {names[p]: (g['lr'] / base_lr, g['weight_decay'], p.ndim)
            for g in wrapper.optimizer.param_groups for p in g['params']}


def test_block_layer_decay_of_tiny():
    groups = _optimizer_groups('tiny', [3, 3, 9, 3])  # 18 blocks
    scale = {n: s for n, (s, _, _) in groups.items()}
    assert scale['backbone.downsample_layers.0.0.weight'] == pytest.approx(0.9**18)
    assert scale['backbone.stages.0.0.depthwise_conv.weight'] == pytest.approx(0.9**18)
    assert scale['backbone.stages.0.1.depthwise_conv.weight'] == pytest.approx(0.9**17)
    assert scale['backbone.downsample_layers.3.1.weight'] == pytest.approx(0.9**3)
    assert scale['backbone.stages.3.2.pointwise_conv2.weight'] == pytest.approx(0.9)
    assert scale['head.fc.weight'] == scale['backbone.norm3.weight'] == 1.0
    _check_no_decay_on_flat_params(groups, 0.05)


def test_group_layer_decay_of_base_and_huge():
    for size, rate in (('base', 0.6), ('huge', 0.75)):
        groups = _optimizer_groups(size, [3, 3, 27, 3])
        scale = {n: s for n, (s, _, _) in groups.items()}
        assert scale['backbone.downsample_layers.0.0.weight'] == pytest.approx(rate**13)
        assert scale['backbone.stages.0.2.grn.gamma'] == pytest.approx(rate**12)
        assert scale['backbone.stages.2.0.norm.weight'] == pytest.approx(rate**10)
        assert scale['backbone.stages.2.26.pointwise_conv1.weight'] == pytest.approx(rate**2)
        assert scale['backbone.stages.3.0.depthwise_conv.weight'] == pytest.approx(rate)
        assert scale['head.fc.weight'] == 1.0
        assert len({round(s, 12) for s in scale.values()}) == 14  # 12 groups + stem + head
        _check_no_decay_on_flat_params(groups, 0.05)


def _check_no_decay_on_flat_params(groups, wd):
    """GRN gamma/beta, LayerNorms and biases (all 1-D) get no weight decay, the rest wd."""
    for name, (_, decay, ndim) in groups.items():
        assert decay == (0.0 if ndim == 1 else wd), name
    for name in ('backbone.stages.1.0.grn.gamma', 'backbone.stages.1.0.grn.beta',
                 'backbone.stages.1.0.norm.weight', 'backbone.downsample_layers.0.1.weight',
                 'backbone.stages.1.0.pointwise_conv1.bias', 'head.fc.bias'):
        assert groups[name][1:] == (0.0, 1), name


def _thin_model():
    model = nn.Module()
    model.backbone = MODELS.build(
        dict(type='ConvNeXtV2', arch=dict(depths=[2, 2, 6, 2], channels=[4, 8, 8, 8]),
             out_indices=(0, 1, 2, 3), gap_before_final_norm=False))
    model.head = nn.Linear(8, 2)
    return model


@pytest.mark.parametrize('codebase', ['mmdet', 'mmseg'])
def test_downstream_layer_decay_constructors_group_convnextv2(codebase):
    """mmdet's and mmseg's own LearningRateDecayOptimizerConstructor on a ConvNeXtV2."""
    registry = __import__(f'{codebase}.registry', fromlist=['OPTIM_WRAPPER_CONSTRUCTORS'])
    model = _thin_model()
    with DefaultScope.overwrite_default_scope(codebase):
        constructor = registry.OPTIM_WRAPPER_CONSTRUCTORS.build(dict(
            type='LearningRateDecayOptimizerConstructor',
            optim_wrapper_cfg=dict(type='OptimWrapper',
                                   optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05)),
            paramwise_cfg=dict(decay_rate=0.9, decay_type='layer_wise', num_layers=6)))
        groups = constructor(model).optimizer.param_groups
    where = {n: g for g in groups for n in g['param_names']}
    for name in ('backbone.stages.1.0.grn.gamma', 'backbone.stages.1.0.grn.beta',
                 'backbone.stages.1.0.norm.weight', 'backbone.norm2.weight',
                 'backbone.stages.2.3.pointwise_conv1.bias'):
        assert where[name]['weight_decay'] == 0.0, name
    assert where['backbone.stages.2.3.pointwise_conv1.weight']['weight_decay'] == 0.05
    lr = [where[f'backbone.{n}.weight']['lr'] for n in (
        'downsample_layers.0.0', 'stages.0.0.depthwise_conv', 'stages.1.0.depthwise_conv',
        'stages.2.0.depthwise_conv', 'stages.2.5.depthwise_conv', 'stages.3.1.depthwise_conv')]
    assert lr == sorted(lr) and lr[0] < lr[-1] < 1.0  # deeper layers decay less
    assert where['head.weight']['lr'] == 1.0


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('ft'))
    return make_synthetic_world(root, num_train=200, num_val=50, image_size=64,
                                layouts=('imagenet', ))['imagenet']


def _loader(data_root, split, pipeline, batch_size):
    return dict(
        batch_size=batch_size, num_workers=0,
        dataset=dict(type='CustomDataset', data_root=data_root, ann_file=f'meta/{split}.txt',
                     data_prefix=split, classes=CLASSES, pipeline=pipeline),
        sampler=dict(type='DefaultSampler', shuffle=split == 'train'))


@pytest.fixture(scope='module')
def fcmae_checkpoint(data, tmp_path_factory):
    """A few iterations of the FCMAE config (tiny arch, 64x64): its last checkpoint."""
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/fcmae/fcmae_convnextv2-base_64xb64-coslr-800e_in1k.py'))
    cfg.model.backbone.arch = TINY
    cfg.model.neck.update(in_channels=64, decoder_dim=32)
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.2, 1.0)),
                dict(type='PackInputs')]
    # Keep the base loader (ImageNet layout, default_collate for the selfsup preprocessor).
    cfg.train_dataloader.update(batch_size=50, num_workers=0, persistent_workers=False)
    cfg.train_dataloader.dataset.update(data_root=data, pipeline=pipeline)
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1)
    cfg.param_scheduler = []
    cfg.work_dir = str(tmp_path_factory.mktemp('fcmae'))
    Runner.from_cfg(cfg).train()
    return osp.join(cfg.work_dir, 'epoch_1.pth')


def _finetune_cfg(data, pretrained: str) -> Config:
    """The atto fine-tuning config for a tiny arch on the 64x64 synthetic set."""
    cfg = _load(_config('atto'), pretrained=pretrained, **{
        'model.head.in_channels': 64, 'model.head.num_classes': len(CLASSES),
        'data_preprocessor.num_classes': len(CLASSES)})
    cfg.model.backbone.arch = TINY
    train = [dict(type='LoadImageFromFile'),
             dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.5, 1.0)),
             dict(type='RandomFlip', prob=0.5, direction='horizontal'),
             dict(type='PackInputs')]
    # 256 -> 224 at ImageNet scale is 73 -> 64 here.
    test = [dict(type='LoadImageFromFile'), dict(type='ResizeEdge', scale=73, edge='short'),
            dict(type='CenterCrop', crop_size=64), dict(type='PackInputs')]
    cfg.train_dataloader = _loader(data, 'train', train, batch_size=20)
    cfg.val_dataloader = cfg.test_dataloader = _loader(data, 'val', test, batch_size=50)
    cfg.val_evaluator = cfg.test_evaluator = dict(type='Accuracy', topk=(1, ))
    return cfg


@pytest.mark.slow
def test_fcmae_checkpoint_initialises_finetuning(data, fcmae_checkpoint):
    cfg = _finetune_cfg(data, fcmae_checkpoint)
    assert cfg.model.backbone.init_cfg.checkpoint == fcmae_checkpoint
    model = MODELS.build(cfg.model)
    model.init_weights()
    fcmae = load_checkpoint_file(fcmae_checkpoint)['state_dict']
    encoder = {k[len('backbone.'):]: v for k, v in fcmae.items() if k.startswith('backbone.')}
    own = model.backbone.state_dict()
    # Every backbone tensor but the final norm (the FCMAE encoder has none) comes from FCMAE.
    assert set(own) - set(encoder) == {'norm3.weight', 'norm3.bias'}
    assert set(encoder) <= set(own)
    for key, value in encoder.items():
        torch.testing.assert_close(own[key], value, rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_finetuning_learns_the_synthetic_classes(data, fcmae_checkpoint, tmp_path):
    """300 iterations of the atto recipe (batch 20) from the tiny FCMAE checkpoint.

    The encoder saw one epoch of FCMAE only, so the learning rate is that of training from
    scratch, and the EMA decay is 0.99 instead of 0.9999 (which averages over ~10k steps).
    """
    cfg = _finetune_cfg(data, fcmae_checkpoint)
    cfg.work_dir = str(tmp_path)
    cfg.optim_wrapper.optimizer.lr = 2e-3
    cfg.train_cfg = dict(by_epoch=True, max_epochs=30, val_interval=30)  # 10 iterations/epoch
    for hook in cfg.custom_hooks:
        if hook.type == 'EMAHook':
            hook.momentum = 0.01
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=30)
    runner = Runner.from_cfg(cfg)
    runner.train()
    accuracy = runner.message_hub.get_scalar('val/accuracy/top1').current()
    print(f'top-1 after 300 iterations: {accuracy:.1f}% (chance 20%)')
    assert accuracy >= 60.0
