# Copyright (c) mmcnx2 contributors. All rights reserved.
"""The recipes against the official code, parameter by parameter: FCMAE weight decay and init
(facebookresearch/ConvNeXt-V2 main_pretrain.py, models/fcmae.py) and the ADE20K UperNet
layer decay (facebookresearch/ConvNeXt semantic_segmentation, mmseg's ConvNeXt configs)."""
import math
import os.path as osp
import re

import pytest
import timm
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

from checkpoint_formats import official_decoder, official_from_timm, sparse_fcmae_from_official
from mmcnx2.converters import convert_state_dict
from mmcnx2.models import ConvNeXtV2

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
FCMAE_ATTO = osp.join(REPO, 'configs/fcmae/fcmae_convnextv2-atto_64xb64-coslr-800e_in1k.py')


def upernet_config(size):
    return osp.join(REPO, 'configs', 'upernet',
                    f'upernet_convnextv2-{size}_8xb2-amp-160k_ade20k-512x512.py')


def build_fcmae(cfg_model):
    from mmpretrain.registry import MODELS
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg_model)
    model.init_weights()
    return model


def weight_decay_by_name(model, optim_wrapper_cfg, scope):
    with DefaultScope.overwrite_default_scope(scope):
        optimizer = build_optim_wrapper(model, optim_wrapper_cfg).optimizer
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in optimizer.param_groups for p in g['params']}


# ------------------------------------------------------------------ FCMAE weight decay
def test_fcmae_weight_decay_is_the_official_pretraining_rule():
    """main_pretrain.py line 178: timm 0.3.2 ``add_weight_decay`` -- no decay iff the tensor
    is 1-D or its name ends with ``.bias`` -- applied to the official FCMAE's own shapes
    (GRN (1, C) in the sparse encoder, (1, 1, 1, C) in the decoder: decayed)."""
    official = sparse_fcmae_from_official(
        official_from_timm(timm.create_model('convnextv2_atto').state_dict()),
        official_decoder(in_channels=320))
    # Fill each official tensor with its official weight decay and carry it to our names.
    official_wd = {
        name: torch.full_like(value, 0. if value.dim() == 1 or name.endswith('.bias') else .05,
                              dtype=torch.float64)
        for name, value in official.items()
    }
    _, ours = convert_state_dict(official_wd, keep_decoder=True)
    expected = {}
    for name, value in ours.items():
        assert value.min() == value.max(), name
        expected[name] = value.flatten()[0].item()

    cfg = Config.fromfile(FCMAE_ATTO)
    model = build_fcmae(cfg.model)
    groups = weight_decay_by_name(model, cfg.optim_wrapper, 'mmpretrain')
    assert sorted(groups) == sorted(expected)
    assert {n: g['weight_decay'] for n, g in groups.items()} == expected
    # What the rule means here: GRN and the mask token are decayed, norms and biases not.
    assert groups['backbone.stages.2.5.grn.gamma']['weight_decay'] == 0.05
    assert groups['neck.decoder.0.grn.beta']['weight_decay'] == 0.05
    assert groups['neck.mask_token']['weight_decay'] == 0.05
    assert groups['backbone.stages.2.5.norm.weight']['weight_decay'] == 0.
    assert groups['backbone.downsample_layers.2.0.bias']['weight_decay'] == 0.
    assert groups['neck.pred.bias']['weight_decay'] == 0.
    assert sum(g['weight_decay'] == 0.05 for g in groups.values()) == sum(
        v == 0.05 for v in expected.values()) == 72


# ------------------------------------------------------------------ FCMAE init
def truncated_std(std, bound=2.):
    """Std of N(0, std^2) cut at +-bound (absolute, timm's a=-2, b=2)."""
    k = bound / std
    pdf = math.exp(-k * k / 2) / math.sqrt(2 * math.pi)
    return std * math.sqrt(1 - 2 * k * pdf / math.erf(k / math.sqrt(2)))


def pooled(model, pattern, suffix='weight'):
    return torch.cat([p.detach().flatten() for n, p in model.named_parameters()
                      if re.fullmatch(pattern, n) and n.endswith(suffix)])


def test_fcmae_official_init_per_layer_kind():
    """models/fcmae.py lines 71-89 after models/convnextv2_sparse.py lines 104-113:
    std 1 (cut at +-2) for nn.Conv2d, MinkowskiDepthwiseConvolution and MinkowskiLinear,
    0.02 for MinkowskiConvolution (downsample), PyTorch's default for the decoder's
    nn.Linear, normal 0.02 for the mask token."""
    cfg = Config.fromfile(FCMAE_ATTO)
    assert cfg.model.init == 'official'
    torch.manual_seed(0)
    model = build_fcmae(cfg.model)
    std1 = truncated_std(1.)
    assert std1 == pytest.approx(0.8796, abs=1e-4)
    kinds = {  # our parameters -> std of the official rule (sample sizes 1920 .. 1.6M)
        r'backbone\.downsample_layers\.0\.0\.weight': std1,  # dense stem nn.Conv2d
        r'backbone\.downsample_layers\.[123]\.1\.weight': 0.02,  # MinkowskiConvolution
        r'backbone\.stages\.\d\.\d+\.depthwise_conv\.weight': std1,
        r'backbone\.stages\.\d\.\d+\.pointwise_conv\d\.weight': std1,
        r'neck\.(proj|pred|decoder\.\d\.depthwise_conv)\.weight': std1,
    }
    for pattern, std in kinds.items():
        values = pooled(model, pattern)
        assert values.std().item() == pytest.approx(std, rel=0.05), pattern
        assert values.abs().max().item() <= (2. if std == std1 else 5 * std), pattern
        assert values.mean().abs().item() < 0.1 * std, pattern
    # The decoder's Linears keep PyTorch's default: weight and bias U(+-1/sqrt(fan_in)).
    for layer in (model.neck.decoder[0].pointwise_conv1, model.neck.decoder[0].pointwise_conv2):
        bound = layer.in_features**-.5
        assert layer.weight.abs().max().item() <= bound
        assert layer.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)
        assert layer.bias.abs().max().item() <= bound
        assert layer.bias.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15)
    assert model.neck.mask_token.std().item() == pytest.approx(0.02, rel=0.15)
    # Every other bias zero, LayerNorms one/zero, GRN zero.
    for name, param in model.named_parameters():
        if param.dim() > 1 or 'neck.decoder.0.pointwise_conv' in name:
            continue
        target = 1. if name.endswith('weight') else 0.  # LayerNorm weights; biases, GRN
        assert torch.all(param == target), name


def test_fcmae_convnext_init_and_kept_checkpoints(tmp_path):
    """init='convnext' is the ConvNeXt V2 init (std 0.02 everywhere); the official re-init
    leaves a backbone loaded from a checkpoint alone and still re-initialises the decoder."""
    cfg = Config.fromfile(FCMAE_ATTO)
    cfg.model.backbone.arch = dict(depths=[1, 1, 2, 1], channels=[8, 16, 32, 64])
    cfg.model.neck.update(in_channels=64, decoder_dim=32)
    convnext = build_fcmae(dict(cfg.model, init='convnext'))
    for name, param in convnext.named_parameters():
        if name.endswith('weight') and param.dim() > 1:
            assert param.std().item() == pytest.approx(0.02, rel=0.25), name

    checkpoint = str(tmp_path / 'backbone.pth')
    torch.save({'state_dict': {f'backbone.{k}': v
                               for k, v in convnext.backbone.state_dict().items()}},
               checkpoint)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=checkpoint,
                                       prefix='backbone.')
    loaded = build_fcmae(cfg.model)
    for name, value in convnext.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[name], value), name
    assert loaded.neck.pred.weight.std().item() == pytest.approx(truncated_std(1.), rel=0.05)

    with pytest.raises(ValueError, match="FCMAE init must be one of .*'jax'"):
        build_fcmae(dict(cfg.model, init='jax'))


# ------------------------------------------------------------------ UperNet layer decay
def upernet_groups(cfg, constructor=None):
    from mmseg.registry import MODELS
    cfg.model.backbone.init_cfg = None
    cfg.model.decode_head.norm_cfg = cfg.model.auxiliary_head.norm_cfg = dict(type='BN')
    optim_wrapper = dict(cfg.optim_wrapper, type='OptimWrapper')  # the groups only
    optim_wrapper.pop('loss_scale')
    if constructor is not None:
        optim_wrapper.update(constructor)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
        optimizer = build_optim_wrapper(model, optim_wrapper).optimizer
    where = {}
    for group in optimizer.param_groups:
        for param in group['params']:
            where[id(param)] = group
    return model, {n: where[id(p)] for n, p in model.named_parameters()}


@pytest.mark.parametrize('size, num_layers', [  # atto in the fast loop, the larger ones slow
    ('atto', 6), pytest.param('tiny', 6, marks=pytest.mark.slow),
    pytest.param('base', 12, marks=pytest.mark.slow)])
def test_upernet_layer_decay_is_the_stage_wise_recipe(size, num_layers):
    """ConvNeXt semantic_segmentation/mmcv_custom/layer_decay_optimizer_constructor.py lines
    45-54, 74, 98 (and its configs' num_layers: 6 tiny, 12 base): downsample layers id 0,
    stage i id i + 1, the rest num_layers + 1; lr scale rate ** (num_layers + 2 - id - 1)."""
    cfg = Config.fromfile(upernet_config(size))
    lr = cfg.optim_wrapper.optimizer.lr
    model, groups = upernet_groups(cfg)
    rate = 0.9
    backbone_names = [n for n, _ in model.named_parameters() if n.startswith('backbone.')]
    assert len(backbone_names) == {'atto': 144, 'tiny': 204, 'base': 384}[size]
    for name, group in groups.items():
        match = re.match(r'backbone\.(downsample_layers|stages)\.(\d)\.', name)
        if match is None:  # output norms and heads
            layer_id = num_layers + 1
        elif match.group(1) == 'downsample_layers':
            layer_id = 0
        else:
            layer_id = int(match.group(2)) + 1
        scale = rate**(num_layers + 2 - layer_id - 1)
        assert group['lr'] == pytest.approx(lr * scale, rel=1e-12), name
    assert groups['backbone.stages.3.0.pointwise_conv1.weight']['lr'] == \
        pytest.approx(lr * rate**(num_layers - 3))
    assert groups['backbone.downsample_layers.3.1.weight']['lr'] == \
        pytest.approx(lr * rate**(num_layers + 1))

    # mmseg's own constructor with the recipe's paramwise_cfg gives every parameter of the
    # model the same lr and weight decay.
    _, reference = upernet_groups(Config.fromfile(upernet_config(size)), dict(
        constructor='LearningRateDecayOptimizerConstructor',
        paramwise_cfg=dict(decay_rate=rate, decay_type='stage_wise', num_layers=num_layers)))
    assert sorted(reference) == sorted(groups)
    for name, group in groups.items():
        assert group['lr'] == pytest.approx(reference[name]['lr'], rel=1e-12), name
        assert group['weight_decay'] == reference[name]['weight_decay'], name


def test_stage_wise_num_layers_is_checked():
    backbone = ConvNeXtV2('atto')
    name = 'backbone.stages.3.0.depthwise_conv.weight'
    assert backbone.get_layer_depth(name, 'backbone.', 'stage_wise') == (4, 8)
    assert backbone.get_layer_depth(name, 'backbone.', 'stage_wise', num_layers=12) == (4, 14)
    assert backbone.get_layer_depth('head.fc.weight', 'backbone.', 'stage_wise') == (7, 8)
    with pytest.raises(ValueError, match='num_layers=6 applies to .*stage_wise.* only'):
        backbone.get_layer_depth(name, 'backbone.', 'group', num_layers=6)
    with pytest.raises(ValueError, match='at least 3, got 2'):
        backbone.get_layer_depth(name, 'backbone.', 'stage_wise', num_layers=2)
