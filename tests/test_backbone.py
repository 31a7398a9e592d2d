# Copyright (c) mmcnx2 contributors. All rights reserved.
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from helpers_runs import REPO
from mmcnx2.models import ConvNeXtV2

TINY_ARCH = dict(depths=[1, 1, 2, 1], channels=[8, 16, 32, 64])

# Parameter counts with a 1000-class head, from the spec table (millions, rounded to 0.01M).
SPEC_PARAMS_M = {
    'atto': 3.71, 'femto': 5.23, 'pico': 9.07, 'nano': 15.62,
    'tiny': 28.64, 'base': 88.72, 'large': 197.96, 'huge': 660.29,
}


def count_with_head(arch):
    with torch.device('meta'):
        backbone = ConvNeXtV2(arch, out_indices=(3, ))
    head = 1000 * backbone.channels[-1] + 1000
    return (sum(p.numel() for p in backbone.parameters()) + head) / 1e6


@pytest.mark.parametrize('arch', list(SPEC_PARAMS_M))
def test_param_count_matches_spec(arch):
    assert count_with_head(arch) == pytest.approx(SPEC_PARAMS_M[arch], abs=0.006)


def test_config_width_table_is_the_backbones():
    """The configs' necks and heads take their widths from this table: it must be the
    backbone's own."""
    table = Config.fromfile(osp.join(REPO, 'configs', '_base_', 'models',
                                     'convnextv2_widths.py')).convnextv2_widths
    assert {arch: list(widths) for arch, widths in table.items()} == {
        arch: setting['channels'] for arch, setting in ConvNeXtV2.arch_settings.items()}


def test_grn_params_are_1d():
    model = ConvNeXtV2(TINY_ARCH)
    grn = model.stages[0][0].grn
    assert grn.gamma.shape == grn.beta.shape == (4 * 8, )


def test_out_indices_shapes():
    model = ConvNeXtV2(TINY_ARCH, out_indices=(0, 1, 2, 3), gap_before_final_norm=False)
    outs = model(torch.randn(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 8, 16, 24), (2, 16, 8, 12), (2, 32, 4, 6),
                                              (2, 64, 2, 3)]
    assert [n for n, _ in model.named_children() if n.startswith('norm')] == \
        ['norm0', 'norm1', 'norm2', 'norm3']
    pooled = ConvNeXtV2(TINY_ARCH, out_indices=(-1, ))(torch.randn(2, 3, 64, 64))
    assert len(pooled) == 1 and pooled[0].shape == (2, 64)


def test_output_norm_normalises_channels():
    model = ConvNeXtV2(TINY_ARCH, out_indices=(1, ), gap_before_final_norm=False)
    model.init_weights()
    out = model(torch.randn(2, 3, 64, 64))[0]
    assert torch.allclose(out.mean(1), torch.zeros(1), atol=1e-5)
    assert torch.allclose(out.var(1, unbiased=False), torch.ones(1), atol=1e-3)


def test_init_weights_follow_spec():
    model = ConvNeXtV2('atto')
    model.init_weights()
    weight = model.stages[2][0].pointwise_conv1.weight
    assert weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.stages[2][0].pointwise_conv1.bias.abs().sum() == 0
    assert model.stages[2][0].grn.gamma.abs().sum() == 0


def test_drop_path_grows_linearly():
    model = ConvNeXtV2(TINY_ARCH, drop_path_rate=0.4)
    rates = [getattr(b.drop_path, 'drop_prob', 0.) for s in model.stages for b in s]
    assert rates == pytest.approx([0., 0.1, 0.2, 0.3, 0.4])


def test_frozen_stages_get_no_gradient():
    model = ConvNeXtV2(TINY_ARCH, frozen_stages=2, drop_path_rate=0.1)
    model.train()
    assert not model.stages[1].training and model.stages[2].training
    sum(o.sum() for o in model(torch.randn(2, 3, 64, 64))).backward()
    for name, param in model.named_parameters():
        frozen = name.startswith(('downsample_layers.0', 'downsample_layers.1', 'stages.0',
                                  'stages.1'))
        assert (param.grad is None) == frozen, name


def test_with_cp_same_output_and_gradients():
    torch.manual_seed(0)
    plain = ConvNeXtV2(TINY_ARCH, out_indices=(2, 3), gap_before_final_norm=False)
    for param in plain.parameters():  # GRN starts at zero: randomise so it matters
        torch.nn.init.normal_(param, std=0.1)
    checkpointed = ConvNeXtV2(TINY_ARCH, out_indices=(2, 3), gap_before_final_norm=False,
                              with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    out_a, out_b = plain(x), checkpointed(x)
    for a, b in zip(out_a, out_b):
        torch.testing.assert_close(a, b)
    sum(o.square().sum() for o in out_a).backward()
    sum(o.square().sum() for o in out_b).backward()
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_unknown_arch_lists_valid_ones():
    with pytest.raises(ValueError, match=r"'tinny'.*'atto'.*'huge'"):
        ConvNeXtV2('tinny')
    with pytest.raises(ValueError, match='depths.*channels'):
        ConvNeXtV2(dict(depths=[1, 1, 1, 1]))
    with pytest.raises(ValueError, match=r'\[1, 1, 1\].*4 entries'):
        ConvNeXtV2(dict(depths=[1, 1, 1], channels=[8, 16, 32]))


def test_without_out_norms_returns_stage_outputs():
    """``out_norms=False`` (the FCMAE encoder): no norm{i} parameters, the stages' outputs."""
    normed = ConvNeXtV2(TINY_ARCH, out_indices=(1, 3), gap_before_final_norm=False)
    plain = ConvNeXtV2(TINY_ARCH, out_indices=(1, 3), gap_before_final_norm=False,
                       out_norms=False)
    assert set(normed.state_dict()) - set(plain.state_dict()) == {
        'norm1.weight', 'norm1.bias', 'norm3.weight', 'norm3.bias'}
    plain.load_state_dict(normed.state_dict(), strict=False)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for i, out, normed_out in zip((1, 3), plain(x), normed(x)):
            torch.testing.assert_close(getattr(normed, f'norm{i}')(out), normed_out)
            # Not normalised over channels (the normed outputs have unit variance).
            assert (out.var(1, unbiased=False) - 1).abs().mean() > 0.3


def test_fcmae_requires_an_encoder_without_output_norms():
    from mmpretrain.registry import MODELS
    fcmae = dict(type='FCMAE',
                 backbone=dict(type='ConvNeXtV2', arch=TINY_ARCH, out_indices=(3, ),
                               gap_before_final_norm=False),
                 neck=dict(type='FCMAEDecoder', in_channels=64, decoder_dim=32),
                 head=dict(type='FCMAEHead'))
    with pytest.raises(ValueError, match='out_norms=False, got .*out_norms=True'):
        MODELS.build(fcmae)
    fcmae['backbone']['out_norms'] = False
    model = MODELS.build(fcmae)
    assert not [name for name in model.state_dict() if name.startswith('backbone.norm')]
    # One patch size, the encoder's stride, for the mask, the decoder and the loss.
    assert model.patch_size == model.head.patch_size == 32
    assert model.neck.pred.out_channels == 32 * 32 * 3


def test_grn_stats_option():
    kwargs = dict(out_indices=(0, ), gap_before_final_norm=False)
    model = ConvNeXtV2(TINY_ARCH, grn_stats='batch', **kwargs)
    assert {block.grn.stats for stage in model.stages for block in stage} == {'batch'}
    per_sample = ConvNeXtV2(TINY_ARCH, **kwargs)
    for name, param in per_sample.named_parameters():  # GRN starts at zero: make it matter
        torch.nn.init.normal_(param, std=1. if '.grn.' in name else 0.1)
    model.load_state_dict(per_sample.state_dict())
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        # A sample's output depends on the others in the batch only with batch statistics.
        torch.testing.assert_close(per_sample(x)[0][:1], per_sample(x[:1])[0])
        torch.testing.assert_close(model(x[:1])[0], per_sample(x[:1])[0])
        assert (model(x)[0][:1] - model(x[:1])[0]).abs().max() > 1e-5
    with pytest.raises(ValueError, match="'channel'"):
        ConvNeXtV2(TINY_ARCH, grn_stats='channel')


def test_wrong_input_shape_is_named():
    with pytest.raises(ValueError, match=r'\(2, 1, 64, 64\)'):
        ConvNeXtV2(TINY_ARCH)(torch.randn(2, 1, 64, 64))


@pytest.mark.parametrize('scope,type_name', [
    ('mmpretrain', 'ConvNeXtV2'),
    ('mmdet', 'ConvNeXtV2'),
    ('mmseg', 'ConvNeXtV2'),
    ('mmdet', 'mmpretrain.ConvNeXtV2'),
    ('mmseg', 'mmpretrain.ConvNeXtV2'),
])
def test_registered_in_all_scopes(scope, type_name):
    from mmengine.registry import MODELS as ROOT_MODELS
    import mmdet.registry  # noqa: F401
    import mmseg.registry  # noqa: F401
    with DefaultScope.overwrite_default_scope(scope):
        model = ROOT_MODELS.build(dict(type=type_name, arch=TINY_ARCH))
    assert isinstance(model, ConvNeXtV2)


@pytest.mark.slow
def test_import_without_mmdet_and_mmseg():
    code = ('import sys; sys.modules["mmdet"] = None; sys.modules["mmseg"] = None\n'
            'import mmcnx2\n'
            'from mmpretrain.registry import MODELS\n'
            'print(type(MODELS.build(dict(type="ConvNeXtV2", arch="atto"))).__name__)')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == 'ConvNeXtV2'


def official_group_layer_id(name, max_layer_id=12):
    """The official ConvNeXt V2 ``get_num_layer_for_convnext`` (group type), for comparison."""
    if name.startswith('downsample_layers'):
        stage = int(name.split('.')[1])
        return {0: 0, 1: 2, 2: 3, 3: max_layer_id}[stage]
    if name.startswith('stages'):
        stage, block = int(name.split('.')[1]), int(name.split('.')[2])
        return {0: 1, 1: 2, 2: 3 + block // 3, 3: max_layer_id}[stage]
    return max_layer_id + 1


def official_single_layer_id(name, depths):
    """The official ``get_num_layer_for_convnext_single`` (one layer per block)."""
    if name.startswith('downsample_layers'):
        return sum(depths[:int(name.split('.')[1])]) + 1
    if name.startswith('stages'):
        stage, block = int(name.split('.')[1]), int(name.split('.')[2])
        return sum(depths[:stage]) + block + 1
    return sum(depths) + 1


@pytest.mark.parametrize('arch', ['atto', 'base'])
def test_layer_depth_matches_official_grouping(arch):
    with torch.device('meta'):
        model = ConvNeXtV2(arch, out_indices=(3, ))
    max_group = 12 if arch == 'base' else 6
    for name, _ in model.named_parameters():
        layer_id, num_layers = model.get_layer_depth('backbone.' + name, 'backbone.', 'group')
        assert (layer_id, num_layers) == (official_group_layer_id(name, max_group),
                                          max_group + 2), name
        layer_id, num_layers = model.get_layer_depth('backbone.' + name, 'backbone.', 'block')
        assert (layer_id, num_layers) == (official_single_layer_id(name, model.depths),
                                          sum(model.depths) + 2), name
    assert model.get_layer_depth('head.fc.weight', 'backbone.', 'block') == \
        (sum(model.depths) + 1, sum(model.depths) + 2)
    with pytest.raises(ValueError, match="'stage'"):
        model.get_layer_depth('stages.0.0.norm.weight', decay_type='stage')


def test_outputs_follow_input_memory_format():
    # Internally channels_last; outputs must come back in the caller's layout because mmcv
    # ops (RoIAlign, ...) misread channels_last tensors.
    model = ConvNeXtV2(TINY_ARCH, out_indices=(0, 3), gap_before_final_norm=False)
    x = torch.randn(2, 3, 64, 64)
    for out in model(x):
        assert out.is_contiguous()
    x_last = x.contiguous(memory_format=torch.channels_last)
    outs = model(x_last)
    for out, ref in zip(outs, model(x)):
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out, ref)
