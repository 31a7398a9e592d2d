# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Random ConvNeXt V2 models and their checkpoints in every public layout, for the tests.

References are independent implementations with random weights (timm, HF transformers); the
official layouts (fine-tuned dense, sparse FCMAE pretraining with its decoder) are written from
timm's weights by the spec's key rules. Inputs are 64x64 (2x2 sites in the last stage, so every
7x7 depthwise tap that reaches the image is used).
"""
import http.server
import re
import runpy
import sys
import threading
from pathlib import Path

import timm
import torch
import yaml
from mmengine.runner import load_checkpoint
from mmpretrain.registry import MODELS
from transformers import ConvNextV2Config, ConvNextV2ForImageClassification

from mmcnx2.models.backbones import ConvNeXtV2

# fp32 tolerance: absolute for the logits, relative to the largest magnitude for the stage
# features (which grow along the residual stream).
TOL = 1e-5


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


def timm_reference(arch):
    torch.manual_seed(0)
    model = randomise_(timm.create_model(f'convnextv2_{arch}', pretrained=False))
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    logits, feats = forward_with_stages(model, model.stages, x)
    return model, x, logits, feats


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


def run_script(monkeypatch, script, *args):
    """Run a command line tool in this process (no second interpreter start-up)."""
    monkeypatch.setattr(sys, 'argv', [str(script)] + [str(a) for a in args])
    runpy.run_path(str(script), run_name='__main__')


class LoopbackServer:
    """An HTTP server on 127.0.0.1 serving ``root`` from a thread; ``requests`` lists the
    paths asked for (so tests can count downloads)."""

    def __init__(self, root):
        requests = self.requests = []

        class Handler(http.server.SimpleHTTPRequestHandler):

            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep the test output clean
                pass

        self._server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.url = f'http://127.0.0.1:{self._server.server_address[1]}'
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()


def write_official_files(root, timm_model):
    """The official release layout under ``root`` (as under OFFICIAL_URL_PREFIX) for atto:
    the IN-1K fine-tuned checkpoint and the dense "pretrain-only" FCMAE encoder."""
    official = official_from_timm(timm_model.state_dict())
    (root / 'im1k').mkdir(parents=True, exist_ok=True)
    (root / 'pt_only').mkdir(parents=True, exist_ok=True)
    torch.save({'model': official}, root / 'im1k' / 'convnextv2_atto_1k_224_ema.pt')
    encoder = {k: v for k, v in official.items() if not k.startswith(('norm.', 'head.'))}
    torch.save({'model': encoder}, root / 'pt_only' / 'convnextv2_atto_1k_224_fcmae.pt')
    return official, encoder


def loopback_model_index(root, weights_url):
    """A copy of mmcnx2's model index under ``root`` whose official weights URLs point at
    ``weights_url`` (a LoopbackServer folder) instead; configs are links to the real ones.

    Returns:
        Path: the copy's ``model-index.yml``.
    """
    from mmcnx2.apis.model_zoo import PACKAGE_DIR
    from mmcnx2.converters import OFFICIAL_URL_PREFIX
    repo = Path(PACKAGE_DIR).parent
    index = yaml.safe_load((repo / 'model-index.yml').read_text())
    (root / 'configs').mkdir(parents=True, exist_ok=True)
    (root / 'configs' / '_base_').symlink_to(repo / 'configs' / '_base_')
    for metafile in index['Import']:
        folder = (repo / metafile).parent
        copy = root / 'configs' / folder.name
        copy.mkdir()
        for file in folder.iterdir():
            if file.name != 'metafile.yml':
                (copy / file.name).symlink_to(file)
        text = (folder / 'metafile.yml').read_text()
        (copy / 'metafile.yml').write_text(text.replace(OFFICIAL_URL_PREFIX, weights_url))
    (root / 'model-index.yml').write_text((repo / 'model-index.yml').read_text())
    return root / 'model-index.yml'
