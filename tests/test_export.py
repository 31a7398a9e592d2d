# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Tracing, scripting and export: TorchScript (trace + save, script), the TorchScript ONNX
exporter (``dynamo=False``, what mmdeploy uses) with onnxruntime, for the backbone and whole
Mask R-CNN / UperNet feature extractors, and an fp16 graph whose GRN cannot overflow."""
import io
import os.path as osp

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmcnx2.models import ConvNeXtV2

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
MASK_RCNN_ATTO = osp.join(REPO, 'configs', 'mask_rcnn',
                          'mask-rcnn_convnextv2-atto_fpn_8xb2-amp-1x_coco.py')
UPERNET_ATTO = osp.join(REPO, 'configs', 'upernet',
                        'upernet_convnextv2-atto_8xb2-amp-160k_ade20k-512x512.py')


def randomise_(model):
    """Random parameters (GRN and LayerNorms included), so no layer is an identity."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    return model.eval()


def feature_backbone():
    return randomise_(
        ConvNeXtV2('atto', out_indices=(0, 1, 2, 3), gap_before_final_norm=False))


def image(*shape, scale=1.):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1)) * scale


def assert_outputs_close(actual, expected, atol):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(torch.as_tensor(a), e, rtol=0, atol=atol)


def test_trace_save_load(tmp_path):
    model = feature_backbone()
    x = image(2, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)
        traced = torch.jit.trace(model, (x, ))
    traced.save(str(tmp_path / 'atto.pt'))
    loaded = torch.jit.load(str(tmp_path / 'atto.pt'))
    with torch.no_grad():
        assert_outputs_close(loaded(x), expected, atol=1e-5)


def test_script_save_load(tmp_path):
    """The scripted backbone (a list of outputs, TorchScript has no tuples of run-time size)
    gives the eager outputs, with and without an FCMAE mask and with drop path in eval."""
    model = randomise_(ConvNeXtV2('atto', out_indices=(1, 3), gap_before_final_norm=False,
                                  drop_path_rate=0.1))
    scripted = torch.jit.script(model)
    scripted.save(str(tmp_path / 'atto.pt'))
    loaded = torch.jit.load(str(tmp_path / 'atto.pt'))
    x = image(2, 3, 64, 96)
    mask = torch.tensor([[[0., 1., 0.], [1., 0., 0.]], [[1., 1., 0.], [0., 0., 1.]]])
    with torch.no_grad():
        assert_outputs_close(loaded(x), model(x), atol=1e-5)
        assert_outputs_close(loaded(x, mask), model(x, mask), atol=1e-5)
    classifier = torch.jit.script(randomise_(ConvNeXtV2('atto')))
    with torch.no_grad():
        assert classifier(x)[0].shape == (2, 320)


def onnx_outputs(module, x, **export_kwargs):
    """Exports ``module`` with the TorchScript exporter and runs it in onnxruntime."""
    buffer = io.BytesIO()
    torch.onnx.export(module, (x, ), buffer, dynamo=False, input_names=['input'],
                      **export_kwargs)
    session = onnxruntime.InferenceSession(buffer.getvalue(),
                                           providers=['CPUExecutionProvider'])
    return session.run(None, {'input': x.numpy()}), buffer.getvalue()


@pytest.mark.parametrize('features', [True, False], ids=['feature maps', 'pooled'])
def test_onnx_backbone_matches_torch(features):
    model = feature_backbone() if features else randomise_(ConvNeXtV2('atto'))
    x = image(2, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)
    actual, _ = onnx_outputs(model, x)
    assert_outputs_close(actual, expected, atol=1e-4)


class ExtractFeat(torch.nn.Module):
    """A detector's or segmentor's ``extract_feat`` as a module to export."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.extract_feat(x)


@pytest.mark.slow  # builds and exports a whole detector / segmentor
@pytest.mark.parametrize('config,scope', [(MASK_RCNN_ATTO, 'mmdet'), (UPERNET_ATTO, 'mmseg')],
                         ids=['mask-rcnn', 'upernet'])
def test_onnx_extract_feat_of_whole_models_matches_torch(config, scope):
    """Backbone + FPN of the atto Mask R-CNN, backbone of the atto UperNet, from the configs."""
    from mmengine.registry import MODELS
    cfg = Config.fromfile(config)
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope(scope):
        model = randomise_(ExtractFeat(MODELS.build(cfg.model)))
    x = image(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)
    actual, _ = onnx_outputs(model, x)
    assert len(expected) == (5 if scope == 'mmdet' else 4)
    assert_outputs_close(actual, expected, atol=1e-4)


def reduction_input_types(onnx_bytes):
    """ONNX element types of the inputs of every ReduceL2 (GRN's norm) in the graph."""
    model = onnx.shape_inference.infer_shapes(onnx.load_from_string(onnx_bytes))
    types = {value.name: value.type.tensor_type.elem_type
             for value in list(model.graph.value_info) + list(model.graph.input)}
    return [types[node.input[0]] for node in model.graph.node if node.op_type == 'ReduceL2']


def test_onnx_fp16_grn_reduces_in_fp32():
    """Exported in half precision (as for TensorRT fp16, official ConvNeXt-V2 issue 66), every
    GRN's sum of squares runs on fp32 data, and onnxruntime's fp16 outputs at input x100 are
    finite and close to fp32 torch."""
    model = feature_backbone()
    x = image(1, 3, 128, 128, scale=100.)
    with torch.no_grad():
        expected = model(x)
    actual, onnx_bytes = onnx_outputs(model.half(), x.half())
    assert reduction_input_types(onnx_bytes) == [onnx.TensorProto.FLOAT] * 12  # 12 blocks
    for out, ref in zip(actual, expected):
        assert out.dtype == np.float16 and np.isfinite(out).all()
        error = (torch.from_numpy(out.astype(np.float32)) - ref).abs().max()
        assert error <= 1e-2 * ref.abs().max()
