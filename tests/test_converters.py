# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Converted checkpoints reproduce their source models' numbers in mmcnx2.

References are independent implementations with random weights (timm, HF transformers,
mmpretrain's ConvNeXt); the official layouts are built from timm weights by the spec's key
rules. Inputs are 64x64 (2x2 sites in the last stage, so every 7x7 depthwise tap that reaches
the image is used); big models are freed as soon as possible to keep the peak memory near two
copies of the largest model (about 5.3 GB for huge).
"""
import gc
import re
import runpy
import sys
from pathlib import Path

import pytest
import timm
import torch
from mmengine.runner import load_checkpoint
from mmpretrain.registry import MODELS
from transformers import ConvNextV2Config, ConvNextV2ForImageClassification

from mmcnx2.converters import convert_checkpoint, convert_state_dict
from mmcnx2.models.backbones import ConvNeXtV2
from mmcnx2.models.necks import FCMAEDecoder

ARCHS = list(ConvNeXtV2.arch_settings)
ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / 'tools' / 'model_converters' / 'convnextv2_to_mmcnx2.py'
# fp32 tolerance: absolute for the logits, relative to the largest magnitude for the stage
# features (which grow along the residual stream).
TOL = 1e-5
# The largest archs skip the checkpoint files (2.6 GB each for huge): the same conversion,
# checked in memory; file handling is covered by the other archs.
IN_MEMORY = ('large', 'huge')


def randomise_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random vector parameters (norms, GRN, biases) so no LayerNorm or GRN is an identity;
    conv and linear weights keep the library's random init."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.numel() == param.shape[-1]:  # vectors, including GRN's (1, 1, 1, C)
                noise = 0.1 * torch.randn(param.shape, generator=gen)
                param.copy_(noise + 1. if name.endswith('weight') else noise)
    return model.eval()


def forward_with_stages(model, stages, *args, **kwargs):
    """Output of ``model`` and the outputs of each module in ``stages`` on the way."""
    feats = []
    handles = [s.register_forward_hook(lambda m, i, o: feats.append(o)) for s in stages]
    with torch.no_grad():
        out = model(*args, **kwargs)
    for handle in handles:
        handle.remove()
    return out, feats


def build_classifier(arch):
    return MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(
                type='ConvNeXtV2', arch=arch, out_indices=(3, ),
                gap_before_final_norm=True),
            head=dict(
                type='LinearClsHead',
                num_classes=1000,
                in_channels=ConvNeXtV2.arch_settings[arch]['channels'][-1]))).eval()


def assert_reproduces(converted, arch, x, ref_logits, ref_feats):
    """The contract: an mmpretrain ImageClassifier loading ``converted`` (a converted file, or
    a converted state dict) strictly gives the reference's logits and stage features."""
    model = build_classifier(arch)
    if isinstance(converted, dict):
        model.load_state_dict(converted, strict=True)
    else:
        load_checkpoint(model, str(converted), map_location='cpu', strict=True)
    # ConvNeXtV2 runs its stages block by block: the last block's output is the stage's.
    logits, feats = forward_with_stages(
        model, [stage[-1] for stage in model.backbone.stages], x, mode='tensor')
    torch.testing.assert_close(logits, ref_logits, atol=TOL, rtol=0)
    assert len(feats) == len(ref_feats) == 4
    for ours, ref in zip(feats, ref_feats):
        torch.testing.assert_close(ours, ref, atol=TOL * ref.abs().max().item(), rtol=0)


def run_cli(monkeypatch, *args):
    """Run the command line tool in this process (no second interpreter start-up)."""
    monkeypatch.setattr(sys, 'argv', [str(CLI)] + [str(a) for a in args])
    runpy.run_path(str(CLI), run_name='__main__')


def timm_reference(arch):
    torch.manual_seed(0)
    model = randomise_(timm.create_model(f'convnextv2_{arch}', pretrained=False))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    logits, feats = forward_with_stages(model, model.stages, x)
    return model, x, logits, feats


@pytest.fixture
def hf_grn_vector_norm(monkeypatch):
    """transformers 4.51 computes GRN's G with ``torch.linalg.norm(ord=2, dim=(1, 2))``, a
    matrix (spectral) norm, not the L2 norm over (H, W) of the paper and the official code;
    fixed upstream in huggingface/transformers#38015 (4.52, which mmpretrain 1.2 cannot import
    beside). Apply that fix so HF checks our key mapping, not its own bug."""
    from transformers.models.convnextv2 import modeling_convnextv2

    def forward(self, x):
        gx = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)
        return self.weight * (x * gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)) + self.bias + x

    monkeypatch.setattr(modeling_convnextv2.ConvNextV2GRN, 'forward', forward)


def hf_reference(arch):
    settings = ConvNeXtV2.arch_settings[arch]
    # HF's final LayerNorm defaults to eps 1e-12; the original model uses 1e-6.
    config = ConvNextV2Config(
        depths=settings['depths'], hidden_sizes=settings['channels'], num_labels=1000,
        layer_norm_eps=1e-6)
    torch.manual_seed(0)
    model = randomise_(ConvNextV2ForImageClassification(config))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(pixel_values=x, output_hidden_states=True)
    # hidden_states: stem output, then each stage's output.
    return model, x, out.logits, list(out.hidden_states[1:])


def official_from_timm(timm_state):
    """The official fine-tuned layout (spec), written from timm's names."""
    official = {}
    for key, value in timm_state.items():
        key = re.sub(r'^stem\.', 'downsample_layers.0.', key)
        key = re.sub(r'^stages\.(\d+)\.downsample\.', r'downsample_layers.\1.', key)
        key = key.replace('.blocks.', '.')
        for old, new in (('conv_dw', 'dwconv'), ('mlp.fc1', 'pwconv1'), ('mlp.fc2', 'pwconv2'),
                         ('mlp.grn.weight', 'grn.gamma'), ('mlp.grn.bias', 'grn.beta'),
                         ('head.norm', 'norm'), ('head.fc', 'head')):
            key = key.replace(old, new)
        if '.grn.' in key:
            value = value.reshape(1, 1, 1, -1)
        elif '.pwconv' in key and value.dim() == 4:  # timm's 1x1 convs; official: Linear
            value = value.flatten(1)
        official[key] = value
    return official


def sparse_kernel(weight):
    """Inverse of the spec's kernel -> weight rules: (Cout, Cin, k, k) -> (k*k, Cin, Cout),
    depthwise (C, 1, k, k) -> (k*k, C)."""
    out_channels, in_channels, size, _ = weight.shape
    flat = weight.transpose(3, 2).reshape(out_channels, in_channels, size * size)
    if in_channels == 1:  # depthwise
        return flat[:, 0].permute(1, 0).contiguous()
    return flat.permute(2, 1, 0).contiguous()


def sparse_fcmae_from_official(official, decoder):
    """The official FCMAE pretraining layout: MinkowskiEngine encoder (all but the dense stem)
    under ``encoder.``, no final norm or head, plus the dense decoder."""
    sparse = {}
    for key, value in official.items():
        if key.startswith(('norm.', 'head.')):
            continue
        if not key.startswith('downsample_layers.0.'):
            if '.grn.' in key or re.search(r'(dwconv|downsample_layers\.\d\.1)\.bias$', key):
                value = value.reshape(1, -1)  # MinkowskiEngine: (1, C)
            elif value.dim() == 4:  # downsample and depthwise conv weights
                key, value = key[:-len('weight')] + 'kernel', sparse_kernel(value)
            elif re.search(r'(downsample_layers\.\d\.0|\.norm)\.', key):
                key = key.replace('.weight', '.ln.weight').replace('.bias', '.ln.bias')
            elif re.search(r'\.pwconv\d\.', key):
                key = key.replace('.weight', '.linear.weight').replace('.bias', '.linear.bias')
        sparse['encoder.' + key] = value
    sparse.update(decoder)
    return sparse


def official_decoder(in_channels, seed=2):
    """Random official FCMAE decoder tensors (dim 512, one block, 32x32x3 prediction)."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {
        'proj.weight': (512, in_channels, 1, 1), 'proj.bias': (512, ),
        'mask_token': (1, 512, 1, 1),
        'decoder.0.dwconv.weight': (512, 1, 7, 7), 'decoder.0.dwconv.bias': (512, ),
        'decoder.0.norm.weight': (512, ), 'decoder.0.norm.bias': (512, ),
        'decoder.0.pwconv1.weight': (2048, 512), 'decoder.0.pwconv1.bias': (2048, ),
        'decoder.0.grn.gamma': (1, 1, 1, 2048), 'decoder.0.grn.beta': (1, 1, 1, 2048),
        'decoder.0.pwconv2.weight': (512, 2048), 'decoder.0.pwconv2.bias': (512, ),
        'pred.weight': (3072, 512, 1, 1), 'pred.bias': (3072, ),
    }
    return {k: torch.randn(s, generator=gen) for k, s in shapes.items()}


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


@pytest.mark.parametrize('arch', ARCHS)
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
@pytest.mark.parametrize('arch', [a for a in ARCHS if a not in IN_MEMORY])
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
