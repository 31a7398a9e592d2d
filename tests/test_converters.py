# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Converted checkpoints reproduce their source models' numbers in mmcnx2, and mmcnx2's
checkpoints exported to timm and HF reproduce ours there.

Big models are freed as soon as possible to keep the peak memory near two copies of the
largest model (about 5.3 GB for huge). The reference models and checkpoint layouts come from
``checkpoint_formats.py``.
"""
import gc
import re
from pathlib import Path

import pytest
import timm
import torch
from checkpoint_formats import (TOL, assert_reproduces, build_classifier, forward_with_stages,
                                hf_reference, official_decoder, official_from_timm, randomise_,
                                run_script, sparse_fcmae_from_official, timm_reference)
from mmpretrain.registry import MODELS
from transformers import ConvNextV2ForImageClassification

from mmcnx2.converters import convert_checkpoint, convert_state_dict, export_state_dict
from mmcnx2.models.backbones import ConvNeXtV2
from mmcnx2.models.necks import FCMAEDecoder

ARCHS = list(ConvNeXtV2.arch_settings)
ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / 'tools' / 'model_converters' / 'convnextv2_to_mmcnx2.py'
# The largest archs skip the checkpoint files (2.6 GB each for huge): the same conversion,
# checked in memory; file handling is covered by the other archs.
IN_MEMORY = ('large', 'huge')
# base and larger take 10-40 s each on 2 cores: checked by the full suite (CI), not the fast
# loop (-m "not slow"), which keeps atto..tiny.
SLOW_ARCHS = ('base', 'large', 'huge')


def arch_params(archs):
    return [pytest.param(arch, marks=pytest.mark.slow) if arch in SLOW_ARCHS else arch
            for arch in archs]


def run_cli(monkeypatch, *args):
    run_script(monkeypatch, CLI, *args)


@pytest.fixture(scope='module')
def timm_atto(tmp_path_factory):
    """A random timm atto, its official fine-tuned checkpoint and its conversion."""
    model, x, logits, feats = timm_reference('atto')
    root = tmp_path_factory.mktemp('timm_atto')
    official = official_from_timm(model.state_dict())
    torch.save({'model': official}, root / 'official.pth')
    fmt, converted = convert_checkpoint(root / 'official.pth', root / 'converted.pth')
    assert fmt == 'official'
    return dict(model=model, x=x, logits=logits, feats=feats, official=official,
                converted=converted, file=root / 'converted.pth')


@pytest.mark.parametrize('arch', arch_params(ARCHS))
def test_timm_checkpoint_reproduces_timm(arch, tmp_path):
    model, x, logits, feats = timm_reference(arch)
    if arch in IN_MEMORY:
        fmt, converted = convert_state_dict(model.state_dict())
    else:
        torch.save(model.state_dict(), tmp_path / 'timm.pth')
        fmt, converted = convert_checkpoint(tmp_path / 'timm.pth', tmp_path / 'converted.pth')
    del model
    gc.collect()
    assert fmt == 'timm'
    assert converted['backbone.stages.0.0.grn.gamma'].dim() == 1
    assert 'head.fc.weight' in converted and 'backbone.norm3.weight' in converted
    if arch not in IN_MEMORY:
        converted = tmp_path / 'converted.pth'
    assert_reproduces(converted, arch, x, logits, feats)


# large and huge are checked against timm only, to stay within the test time budget.
@pytest.mark.parametrize('arch', arch_params(a for a in ARCHS if a not in IN_MEMORY))
def test_hf_checkpoint_reproduces_hf(arch, tmp_path, hf_grn_vector_norm):
    model, x, logits, feats = hf_reference(arch)
    model.save_pretrained(tmp_path / 'hf')  # model.safetensors
    del model
    gc.collect()
    fmt, _ = convert_checkpoint(tmp_path / 'hf', tmp_path / 'converted.pth')
    assert fmt == 'hf'
    assert_reproduces(tmp_path / 'converted.pth', arch, x, logits, feats)


def test_hf_safetensors_and_bin_give_the_same_weights(tmp_path, hf_grn_vector_norm, capsys,
                                                     monkeypatch):
    model, x, logits, feats = hf_reference('atto')
    model.save_pretrained(tmp_path / 'safetensors', safe_serialization=True)
    model.save_pretrained(tmp_path / 'bin', safe_serialization=False)
    assert (tmp_path / 'safetensors' / 'model.safetensors').is_file()
    assert (tmp_path / 'bin' / 'pytorch_model.bin').is_file()
    _, from_safetensors = convert_checkpoint(tmp_path / 'safetensors' / 'model.safetensors',
                                             tmp_path / 'a.pth')
    # The command line tool, on the .bin file.
    run_cli(monkeypatch, tmp_path / 'bin' / 'pytorch_model.bin', tmp_path / 'b.pth')
    assert '(hf)' in capsys.readouterr().out
    from_bin = torch.load(tmp_path / 'b.pth')['state_dict']
    assert from_bin.keys() == from_safetensors.keys()
    assert all(torch.equal(from_bin[k], v) for k, v in from_safetensors.items())
    assert_reproduces(tmp_path / 'b.pth', 'atto', x, logits, feats)


def test_official_fine_tuned_reproduces_timm(timm_atto):
    converted = timm_atto['converted']
    assert timm_atto['official']['stages.0.0.grn.gamma'].shape == (1, 1, 1, 160)
    assert converted['backbone.stages.0.0.grn.gamma'].shape == (160, )
    assert_reproduces(timm_atto['file'], 'atto', timm_atto['x'], timm_atto['logits'],
                      timm_atto['feats'])


def test_official_fcmae_dense_and_sparse_give_the_same_backbone(timm_atto, tmp_path,
                                                                monkeypatch):
    official, dense_converted = timm_atto['official'], timm_atto['converted']
    backbone = {k: v for k, v in dense_converted.items() if k.startswith('backbone.')
                and not k.startswith('backbone.norm3.')}
    # Dense "pretrain-only" release: encoder weights only, no prefix.
    pretrain_only = {k: v for k, v in official.items() if not k.startswith(('norm.', 'head.'))}
    fmt, converted = convert_state_dict(pretrain_only)
    assert fmt == 'official'
    assert converted.keys() == backbone.keys()
    assert all(torch.equal(converted[k], v) for k, v in backbone.items())

    decoder = official_decoder(in_channels=320)
    sparse = sparse_fcmae_from_official(official, decoder)
    assert sparse['encoder.stages.0.0.dwconv.kernel'].shape == (49, 40)
    assert sparse['encoder.downsample_layers.1.1.kernel'].shape == (4, 40, 80)
    torch.save({'model': sparse}, tmp_path / 'fcmae.pth')

    fmt, converted = convert_checkpoint(tmp_path / 'fcmae.pth', tmp_path / 'converted.pth')
    assert fmt == 'official-fcmae'
    assert converted.keys() == backbone.keys()  # decoder dropped, no head
    assert all(torch.equal(converted[k], v) for k, v in backbone.items())

    run_cli(monkeypatch, tmp_path / 'fcmae.pth', tmp_path / 'with_decoder.pth', '--keep-decoder')
    with_decoder = torch.load(tmp_path / 'with_decoder.pth')['state_dict']
    neck = {k[len('neck.'):]: v for k, v in with_decoder.items() if k.startswith('neck.')}
    assert {k for k in with_decoder if not k.startswith('neck.')} == backbone.keys()
    assert neck['proj.weight'].shape == (512, 320, 1, 1)
    assert neck['mask_token'].shape == (1, 512, 1, 1)
    assert neck['pred.weight'].shape == (3072, 512, 1, 1)
    assert neck['decoder.0.grn.gamma'].shape == (2048, )
    assert torch.equal(neck['decoder.0.grn.beta'], decoder['decoder.0.grn.beta'].flatten())
    assert torch.equal(neck['decoder.0.pointwise_conv1.weight'],
                       decoder['decoder.0.pwconv1.weight'])
    # It is exactly mmcnx2's FCMAE neck.
    FCMAEDecoder(in_channels=320).load_state_dict(neck, strict=True)


def test_mmpretrain_checkpoint_passes_through(tmp_path):
    source = randomise_(MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(type='ConvNeXt', arch='atto', use_grn=True,
                          layer_scale_init_value=0.),
            head=dict(type='LinearClsHead', num_classes=1000, in_channels=320))))
    torch.save({'meta': {}, 'state_dict': source.state_dict()}, tmp_path / 'mmpretrain.pth')
    x = torch.randn(1, 3, 64, 64)
    logits, feats = forward_with_stages(source, source.backbone.stages, x, mode='tensor')
    fmt, converted = convert_checkpoint(tmp_path / 'mmpretrain.pth', tmp_path / 'out.pth')
    assert fmt == 'mmpretrain'
    assert converted.keys() == source.state_dict().keys()
    assert_reproduces(tmp_path / 'out.pth', 'atto', x, logits, feats)


def test_init_cfg_loads_converted_backbone(timm_atto):
    backbone = ConvNeXtV2(
        'atto', out_indices=(0, 1, 2, 3), gap_before_final_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint=str(timm_atto['file']), prefix='backbone.'))
    backbone.init_weights()
    converted = timm_atto['converted']
    own = backbone.state_dict()
    # Only the output norms this converted classifier does not have keep their init.
    assert {k for k in own if 'backbone.' + k not in converted} == {
        f'norm{i}.{p}' for i in range(3) for p in ('weight', 'bias')}
    assert all(torch.equal(v, converted['backbone.' + k]) for k, v in own.items()
               if 'backbone.' + k in converted)


def test_init_cfg_rejects_a_file_that_does_not_fit(timm_atto, tmp_path):
    state_dict = dict(timm_atto['converted'])
    del state_dict['backbone.stages.1.0.grn.gamma']
    state_dict['backbone.stages.1.0.gamma'] = torch.ones(80)  # a ConvNeXt V1 layer scale
    torch.save({'state_dict': state_dict}, tmp_path / 'bad.pth')
    backbone = ConvNeXtV2(
        'atto', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'bad.pth'),
                              prefix='backbone.'))
    with pytest.raises(RuntimeError) as err:
        backbone.init_weights()
    message = str(err.value)
    assert re.search(r"missing keys \(1\): \['stages\.1\.0\.grn\.gamma'\]", message)
    assert re.search(r"unexpected keys \(1\): \['stages\.1\.0\.gamma'\]", message)


def test_unrecognised_format_names_what_it_saw(tmp_path, monkeypatch):
    torch.save({'state_dict': {'layer1.0.conv1.weight': torch.zeros(1),
                               'fc.weight': torch.zeros(1)}}, tmp_path / 'resnet.pth')
    with pytest.raises(SystemExit, match=r'resnet\.pth.*Unrecognised checkpoint format.*'
                       r"2 keys: \['layer1\.0\.conv1\.weight', 'fc\.weight'\]"):
        run_cli(monkeypatch, tmp_path / 'resnet.pth', tmp_path / 'out.pth')
    assert not (tmp_path / 'out.pth').exists()


def test_keys_without_counterpart_are_refused(timm_atto):
    official = dict(timm_atto['official'])
    official['stages.0.0.gamma'] = torch.ones(40)  # ConvNeXt V1 layer scale
    with pytest.raises(ValueError, match=r"official checkpoint has keys with no ConvNeXt V2 "
                       r"counterpart: \['stages\.0\.0\.gamma'\]"):
        convert_state_dict(official)


EXPORTERS = ROOT / 'tools' / 'model_converters'


def _our_classifier_checkpoint(arch, path):
    """A random mmcnx2 classifier saved as a runner saves it, its input and its outputs."""
    torch.manual_seed(3)
    model = randomise_(build_classifier(arch), seed=3)
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, path)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    logits, feats = forward_with_stages(
        model, [stage[-1] for stage in model.backbone.stages], x, mode='tensor')
    return model, x, logits, feats


# atto: timm runs the MLP as 1x1 convs (conv_mlp); tiny: as Linear layers.
@pytest.mark.parametrize('arch', ['atto', 'tiny'])
def test_export_to_timm_loads_strictly_and_reproduces_ours(arch, tmp_path, monkeypatch, capsys):
    _, x, logits, feats = _our_classifier_checkpoint(arch, tmp_path / 'ours.pth')
    run_script(monkeypatch, EXPORTERS / 'mmcnx2_to_timm.py', tmp_path / 'ours.pth',
               tmp_path / 'timm.pth')
    assert f"timm.create_model('convnextv2_{arch}', num_classes=1000)" in capsys.readouterr().out
    model = timm.create_model(f'convnextv2_{arch}', pretrained=False).eval()
    model.load_state_dict(torch.load(tmp_path / 'timm.pth', weights_only=True), strict=True)
    timm_logits, timm_feats = forward_with_stages(model, model.stages, x)
    torch.testing.assert_close(timm_logits, logits, atol=TOL, rtol=0)
    for theirs, ours in zip(timm_feats, feats):
        torch.testing.assert_close(theirs, ours, atol=TOL * ours.abs().max().item(), rtol=0)


def test_export_to_hf_loads_strictly_and_reproduces_ours(tmp_path, monkeypatch, capsys,
                                                         hf_grn_vector_norm):
    _, x, logits, feats = _our_classifier_checkpoint('atto', tmp_path / 'ours.pth')
    run_script(monkeypatch, EXPORTERS / 'mmcnx2_to_hf.py', tmp_path / 'ours.pth',
               tmp_path / 'hf')
    assert 'ConvNextV2ForImageClassification.from_pretrained' in capsys.readouterr().out
    model, info = ConvNextV2ForImageClassification.from_pretrained(
        tmp_path / 'hf', output_loading_info=True)
    assert info == dict(missing_keys=[], unexpected_keys=[], mismatched_keys=[], error_msgs=[])
    with torch.no_grad():
        out = model.eval()(pixel_values=x, output_hidden_states=True)
    torch.testing.assert_close(out.logits, logits, atol=TOL, rtol=0)
    for theirs, ours in zip(out.hidden_states[1:], feats):
        torch.testing.assert_close(theirs, ours, atol=TOL * ours.abs().max().item(), rtol=0)


def test_timm_and_hf_round_trips_are_exact(hf_grn_vector_norm):
    timm_state = timm_reference('pico')[0].state_dict()
    _, ours = convert_state_dict(timm_state)
    back, dropped = export_state_dict(ours, 'timm')
    assert dropped == [] and list(back) == list(timm_state)
    assert all(torch.equal(back[k], v) for k, v in timm_state.items())
    hf_state = hf_reference('atto')[0].state_dict()
    _, ours = convert_state_dict(hf_state)
    back, dropped = export_state_dict(ours, 'hf')
    back = {k if k.startswith('classifier.') else 'convnextv2.' + k: v for k, v in back.items()}
    assert dropped == [] and back.keys() == hf_state.keys()
    assert all(torch.equal(back[k], v) for k, v in hf_state.items())


def test_export_of_a_detection_backbone_fits_a_headless_timm_model(tmp_path, monkeypatch,
                                                                   capsys):
    """A Mask R-CNN / UperNet checkpoint: four output norms, a neck; the last output norm
    becomes timm's head.norm, the other norms and the neck are reported as dropped."""
    backbone = randomise_(ConvNeXtV2('atto', out_indices=(0, 1, 2, 3),
                                     gap_before_final_norm=False))
    state_dict = {'backbone.' + k: v for k, v in backbone.state_dict().items()}
    state_dict['neck.lateral_convs.0.conv.weight'] = torch.zeros(256, 40, 1, 1)
    torch.save({'state_dict': state_dict}, tmp_path / 'mask_rcnn.pth')
    run_script(monkeypatch, EXPORTERS / 'mmcnx2_to_timm.py', tmp_path / 'mask_rcnn.pth',
               tmp_path / 'timm.pth')
    out = capsys.readouterr().out
    assert "timm.create_model('convnextv2_atto', num_classes=0)" in out
    assert ("dropped 7 tensors without a timm counterpart: ['backbone.norm0', 'backbone.norm1', "
            "'backbone.norm2', 'neck']") in out
    model = timm.create_model('convnextv2_atto', num_classes=0)
    model.load_state_dict(torch.load(tmp_path / 'timm.pth', weights_only=True), strict=True)
    assert torch.equal(model.head.norm.weight, backbone.norm3.weight)
