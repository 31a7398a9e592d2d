# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Every fast path against the straightforward implementation: outputs and gradients.

GRN parameters are random and non-zero throughout: a zero-initialised GRN is the identity and
would hide any error in its statistics.
"""
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from mmcnx2.models.backbones.convnext_v2 import ConvNeXtV2, ConvNeXtV2Block
from mmcnx2.models.utils import GRN, fast_block
from mmcnx2.models.utils.grn_function import grn, pointwise_linear


def reference_grn(x, gamma, beta, eps=1e-6, visible=None, stats='sample'):
    """GRN exactly as written in the paper's released dense code, reduced over H, W (and N
    with ``stats='batch'``) in fp32."""
    if visible is not None:
        x = x * visible
    dims = (1, 2) if stats == 'sample' else (0, 1, 2)
    gx = torch.linalg.vector_norm(x.float(), dim=dims, keepdim=True)
    nx = (gx / (gx.mean(dim=-1, keepdim=True) + eps)).to(x.dtype)
    return gamma * (x * nx) + beta + x


def minkowski_grn(features, gamma, beta):
    """The released sparse encoder's ``MinkowskiGRN`` (ConvNeXt-V2 models/utils.py, lines
    28-31) on the (M, C) features of the M visible sites of the whole batch."""
    gx = torch.norm(features, p=2, dim=0, keepdim=True)
    nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
    return gamma * (features * nx) + beta + features


def random_params(channels, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1)
    gamma = torch.randn(channels, generator=gen) * 0.5
    beta = torch.randn(channels, generator=gen) * 0.5
    return [p.to(dtype).requires_grad_() for p in (gamma, beta)]


def outputs_and_grads(fn, inputs):
    """Output and d(weighted sum of output)/d(each input) of ``fn(*inputs)``."""
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out.float() * weights).sum().backward()
    return [out.detach().float()] + [t.grad.float() for t in inputs]


def assert_all_close(actual, expected, rtol, atol):
    names = ['output'] + [f'grad of input {i}' for i in range(len(actual) - 1)]
    for name, a, e in zip(names, actual, expected):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol, msg=lambda m: f'{name}: {m}')


def activations(shape, dtype=torch.float32):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    x[0, ..., 3] = 0.  # a channel with zero norm: the vector-norm gradient is defined as 0
    return x.to(dtype)


@pytest.mark.parametrize('shape', [(2, 5, 6, 16), (3, 7, 24)])
def test_grn_function_matches_reference_fp32(shape):
    x = activations(shape)
    gamma, beta = random_params(shape[-1])
    ref = (lambda x, g, b: reference_grn(x.unsqueeze(2), g, b).squeeze(2)) if len(shape) == 3 \
        else reference_grn
    expected = outputs_and_grads(ref, [x, gamma, beta])
    actual = outputs_and_grads(grn, [x, gamma, beta])
    assert expected[0].abs().max() > 1  # not a trivial output
    assert_all_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(params=[True, False], ids=['conv1x1', 'linear'])
def conv1x1(request):
    """Runs a test, on this CPU, with the pointwise layers as 1x1 convolutions (what eager CPU
    runs use), then as Linears (what CUDA and compiled runs use)."""
    return request.param


@pytest.mark.parametrize('recompute', [False, True])
def test_grn_function_with_gelu_input_matches_reference(recompute, conv1x1):
    x = activations((2, 6, 5, 12))
    gamma, beta = random_params(12)
    expected = outputs_and_grads(lambda x, g, b: reference_grn(F.gelu(x), g, b),
                                 [x, gamma, beta])
    actual = outputs_and_grads(
        lambda x, g, b: grn(x, g, b, gelu_input=True, recompute=recompute,
                            conv1x1=conv1x1), [x, gamma, beta])
    assert_all_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_grn_function_batch_stats_matches_reference(conv1x1):
    x = activations((3, 5, 4, 12))
    gamma, beta = random_params(12)
    expected = outputs_and_grads(lambda x, g, b: reference_grn(x, g, b, stats='batch'),
                                 [x, gamma, beta])
    actual = outputs_and_grads(
        lambda x, g, b: grn(x, g, b, stats='batch', conv1x1=conv1x1),
        [x, gamma, beta])
    assert_all_close(actual, expected, rtol=1e-5, atol=1e-5)
    per_sample = grn(x, gamma, beta)
    assert (per_sample - actual[0]).abs().max() > 1e-2  # the statistics differ


def linear_params(in_channels, out_channels, dtype=torch.float32):
    gen = torch.Generator().manual_seed(8)
    weight = torch.randn(out_channels, in_channels, generator=gen) / in_channels**0.5
    bias = torch.randn(out_channels, generator=gen)
    return [p.to(dtype).requires_grad_() for p in (weight, bias)]


@pytest.mark.parametrize('gelu_input', [False, True])
@pytest.mark.parametrize('recompute', [False, True])
def test_grn_fused_with_linear_matches_reference(gelu_input, recompute, conv1x1):
    x = activations((2, 6, 5, 12))
    params = random_params(12) + linear_params(12, 7)

    def reference(x, gamma, beta, weight, bias):
        return F.linear(reference_grn(F.gelu(x) if gelu_input else x, gamma, beta), weight,
                        bias)

    def fused(x, gamma, beta, weight, bias):
        return grn(x, gamma, beta, gelu_input=gelu_input, weight=weight, bias=bias,
                   recompute=recompute, conv1x1=conv1x1)

    expected = outputs_and_grads(reference, [x] + params)
    actual = outputs_and_grads(fused, [x] + params)
    assert actual[0].shape == (2, 6, 5, 7)
    assert_all_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('recompute', [False, True])
def test_grn_fused_with_linear_bf16_close_to_fp32_reference(recompute, conv1x1):
    x = activations((2, 8, 8, 32), torch.bfloat16)
    params = random_params(32) + linear_params(32, 16)

    def reference(x, gamma, beta, weight, bias):
        return F.linear(reference_grn(F.gelu(x.float()), gamma, beta), weight, bias)

    def fused(x, gamma, beta, weight, bias):
        return grn(x, gamma, beta, gelu_input=True, weight=weight, bias=bias,
                   recompute=recompute, conv1x1=conv1x1)

    expected = outputs_and_grads(reference, [x] + params)
    actual = outputs_and_grads(fused, [x] + params)
    assert fused(x, *params).dtype == torch.bfloat16
    assert_all_close(actual, expected, rtol=3e-2, atol=1e-1)


def test_pointwise_linear_matches_linear(conv1x1):
    x = activations((2, 5, 4, 12))
    weight, bias = linear_params(12, 20)
    expected = outputs_and_grads(F.linear, [x, weight, bias])
    actual = outputs_and_grads(lambda x, w, b: pointwise_linear(x, w, b, conv1x1),
                               [x, weight, bias])
    assert_all_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('stats', ['sample', 'batch'])
def test_grn_module_is_the_formula(stats):
    x = activations((2, 4, 4, 8))
    visible = (torch.rand(2, 4, 4, 1, generator=torch.Generator().manual_seed(3)) > 0.5).float()
    gamma, beta = random_params(8)
    module = GRN(8, stats=stats)

    def module_forward(x, g, b):
        return functional_call(module, {'gamma': g, 'beta': b}, (x * visible, ))

    expected = outputs_and_grads(
        lambda x, g, b: reference_grn(x, g, b, visible=visible, stats=stats), [x, gamma, beta])
    actual = outputs_and_grads(module_forward, [x, gamma, beta])
    assert_all_close(actual, expected, rtol=1e-5, atol=1e-5)
    # Removed sites neither count in the statistics nor receive gradient.
    assert actual[1][(visible == 0).expand_as(x)].abs().max() == 0


def test_grn_batch_stats_is_the_released_minkowski_grn():
    """``stats='batch'`` on a masked dense map gives, at the visible sites, what the released
    sparse encoder's GRN gives on the features of the visible sites of the whole batch."""
    x = activations((3, 4, 5, 8))
    visible = (torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(3)) > 0.4)
    gamma, beta = random_params(8)
    module = GRN(8, stats='batch')
    with torch.no_grad():
        module.gamma.copy_(gamma)
        module.beta.copy_(beta)
        dense = module(x * visible[..., None])
        sparse = minkowski_grn(x[visible], gamma, beta)  # (M, C) rows, batch-major
        fused = grn(x * visible[..., None], gamma, beta, stats='batch', conv1x1=True)
    torch.testing.assert_close(dense[visible], sparse, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fused[visible], sparse, rtol=1e-6, atol=1e-6)
    per_sample = GRN(8).to(x.dtype)
    per_sample.load_state_dict(module.state_dict())
    with torch.no_grad():
        assert (per_sample(x * visible[..., None])[visible] - sparse).abs().max() > 1e-2


def test_grn_reduction_in_fp32_does_not_overflow_fp16():
    """A sum of squares over 64 x 64 sites of values ~10 is 4e5, past fp16's 65504 (official
    ConvNeXt-V2 issue 66, TensorRT fp16); GRN reduces in fp32."""
    x = 10 * activations((1, 64, 64, 8))
    module = GRN(8)
    torch.nn.init.normal_(module.gamma)
    expected = module(x)
    half = module.half()(x.half())
    assert half.dtype == torch.float16 and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), expected, rtol=1e-2, atol=5e-2)


def test_grn_function_bf16_close_to_fp32_reference():
    x = activations((2, 8, 8, 32), torch.bfloat16)
    gamma, beta = random_params(32)
    expected = outputs_and_grads(lambda x, g, b: reference_grn(x.float(), g, b), [x, gamma, beta])
    actual = outputs_and_grads(grn, [x, gamma, beta])
    assert actual[0].dtype == torch.float32  # compared in fp32; the output itself is bf16
    assert grn(x, gamma, beta).dtype == torch.bfloat16
    assert_all_close(actual, expected, rtol=2e-2, atol=5e-2)


def reference_block(block, x, visible=None):
    """ConvNeXtV2Block as the paper writes it, with the dense FCMAE masking."""
    residual = block.depthwise_conv(x)
    if visible is not None:
        residual = residual * visible
    residual = residual.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    residual = F.gelu(block.pointwise_conv1(block.norm(residual)))
    residual = reference_grn(residual, block.grn.gamma, block.grn.beta,
                             visible=None if visible is None else visible.permute(0, 2, 3, 1))
    residual = block.pointwise_conv2(residual).permute(0, 3, 1, 2)
    if visible is not None:
        residual = residual * visible
    return x + block.drop_path(residual)


def make_block(channels=8, **kwargs):
    block = ConvNeXtV2Block(channels, **kwargs)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for param in block.parameters():  # GRN included: random, non-zero
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return block


def block_outputs_and_grads(block, forward, x, visible):
    """Output, input gradient and every parameter gradient of ``forward(block, x, visible)``,
    with the same drop-path draw for every call."""
    block.zero_grad()
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(5)
    out = forward(block, x, visible)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    (out * weights).sum().backward()
    return [out.detach(), x.grad] + [p.grad.clone() for p in block.parameters()]


def patch_visible(n, size, kept_per_sample):
    """(N, 1, size, size) 0/1 map keeping ``kept_per_sample[i]`` random sites of sample i."""
    gen = torch.Generator().manual_seed(6)
    visible = torch.zeros(n, size * size)
    for i, kept in enumerate(kept_per_sample):
        visible[i, torch.randperm(size * size, generator=gen)[:kept]] = 1.
    return visible.view(n, 1, size, size)


def fast(conv1x1):
    """The block's fast implementation with 1x1 convolutions or Linears, called directly."""
    return lambda block, x, visible: fast_block.forward(block, x, visible, conv1x1)


def formula(block, x, visible):
    """The block as it runs when the fast path does not apply."""
    with fast_block.switched_off():
        return block(x, visible)


BLOCK_CASES = ['dense', 'same-count mask', 'ragged mask', 'drop-path', 'checkpoint']


def block_case(case, channels=8, **kwargs):
    """A random block, input and visible map (None when dense) for a test case."""
    if case == 'drop-path':
        kwargs['drop_path_rate'] = 0.5
    elif case == 'checkpoint':
        kwargs['with_cp'] = True
    block = make_block(channels, **kwargs).train()
    x = torch.randn(3, channels, 6, 6, generator=torch.Generator().manual_seed(7))
    x = x.contiguous(memory_format=torch.channels_last)
    visible = None
    if case == 'same-count mask':
        visible = patch_visible(3, 6, [14, 14, 14])
    elif case == 'ragged mask':
        visible = patch_visible(3, 6, [10, 20, 36])
    if visible is not None:
        x = x * visible  # the backbone zeroes removed sites before every block
    return block, x, visible


@pytest.mark.parametrize('case', BLOCK_CASES)
@pytest.mark.parametrize('recompute_grn', [False, True])
def test_block_fast_path_matches_reference(case, recompute_grn, conv1x1):
    block, x, visible = block_case(case, recompute_grn=recompute_grn)
    expected = block_outputs_and_grads(block, reference_block, x, visible)
    actual = block_outputs_and_grads(block, fast(conv1x1), x, visible)
    assert_all_close(actual, expected, rtol=1e-5, atol=2e-5)
    if visible is not None:
        assert actual[0][(visible == 0).expand_as(x)].abs().max() == 0  # removed stay empty
    assert actual[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('case', BLOCK_CASES)
def test_block_formula_matches_reference(case):
    block, x, visible = block_case(case)
    expected = block_outputs_and_grads(block, reference_block, x, visible)
    actual = block_outputs_and_grads(block, formula, x, visible)
    assert_all_close(actual, expected, rtol=1e-5, atol=2e-5)
    assert actual[0].is_contiguous(memory_format=torch.channels_last)


def sparse_reference_block(block, x, visible):
    """The released sparse encoder's block with ``MinkowskiGRN``, written on the (M, C) rows
    of the visible sites of the whole batch (the depthwise conv is dense on zeroed input:
    its output at visible sites is the sparse conv's)."""
    rows = visible[:, 0].bool()  # (N, H, W)
    features = block.depthwise_conv(x).permute(0, 2, 3, 1)[rows]  # (M, C)
    features = F.gelu(block.pointwise_conv1(block.norm(features)))
    features = minkowski_grn(features, block.grn.gamma, block.grn.beta)
    features = block.pointwise_conv2(features)
    residual = torch.zeros_like(x.permute(0, 2, 3, 1)).index_put((rows, ), features)
    return x + residual.permute(0, 3, 1, 2)


@pytest.mark.parametrize('case', ['same-count mask', 'ragged mask'])
@pytest.mark.parametrize('forward', ['fast', 'formula'])
def test_block_batch_grn_stats_match_released_sparse_block(case, forward):
    block, x, visible = block_case(case, grn_stats='batch')
    expected = block_outputs_and_grads(block, sparse_reference_block, x, visible)
    actual = block_outputs_and_grads(block, fast(True) if forward == 'fast' else formula, x,
                                     visible)
    assert_all_close(actual, expected, rtol=1e-5, atol=2e-5)
    per_sample = block_outputs_and_grads(block, reference_block, x, visible)
    assert (per_sample[0] - expected[0]).abs().max() > 1e-2  # the statistics matter


def test_block_dispatch():
    """The fast path runs in eager forwards (training and inference) and nowhere else: not
    within switched_off(), not while tracing, not when a hook watches a layer."""
    block, x, _ = block_case('dense')
    calls = []
    fast_forward = fast_block.forward

    def spy(*args):
        calls.append(torch.jit.is_tracing())
        return fast_forward(*args)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fast_block, 'forward', spy)
        block(x)
        with torch.no_grad():
            block(x)
        assert calls == [False, False]
        with fast_block.switched_off():
            block(x)
        torch.jit.trace(block.eval(), (x, ), check_trace=False)
        handle = block.pointwise_conv1.register_forward_pre_hook(lambda module, args: None)
        block(x)
        handle.remove()
        assert calls == [False, False]
        block(x)
        assert calls == [False, False, False]


def test_hooks_on_grn_fire_and_see_the_formula():
    """A forward hook on ``block.grn`` fires once per block call with the GRN's (N, H, W, 4C)
    input, and the block's output and gradients are unchanged by watching."""
    block, x, visible = block_case('same-count mask')
    expected = block_outputs_and_grads(block, lambda b, x, v: b(x, v), x, visible)
    seen = []
    handle = block.grn.register_forward_hook(
        lambda module, args, out: seen.append((args[0].shape, out.shape)))
    actual = block_outputs_and_grads(block, lambda b, x, v: b(x, v), x, visible)
    handle.remove()
    assert seen == [((3, 6, 6, 32), (3, 6, 6, 32))]
    assert_all_close(actual, expected, rtol=1e-5, atol=2e-5)

    model = ConvNeXtV2(dict(depths=[1, 2, 1, 1], channels=[8, 16, 24, 32]))
    shapes = []
    for stage in model.stages:
        for b in stage:
            b.grn.register_forward_hook(lambda m, args, out: shapes.append(out.shape[-1]))
    model(torch.randn(1, 3, 64, 64))
    assert shapes == [32, 64, 64, 96, 128]


@pytest.mark.parametrize('recompute_grn', [False, True])
@pytest.mark.parametrize('case', ['dense', 'same-count mask'])
def test_block_bf16_autocast_close_to_reference(case, recompute_grn, conv1x1):
    block = make_block(16, recompute_grn=recompute_grn).train()
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(7))
    x = x.contiguous(memory_format=torch.channels_last)
    visible = patch_visible(2, 8, [20, 20]) if case == 'same-count mask' else None
    if visible is not None:
        x = x * visible

    def under_autocast(forward):
        def run(block, x, visible):
            with torch.autocast('cpu', dtype=torch.bfloat16):
                return forward(block, x, visible).float()
        return run

    expected = block_outputs_and_grads(block, reference_block, x, visible)
    actual = block_outputs_and_grads(block, under_autocast(fast(conv1x1)), x, visible)
    reference_bf16 = block_outputs_and_grads(block, under_autocast(reference_block), x,
                                             visible)
    for fast_result, ref_bf16, exact in zip(actual, reference_bf16, expected):
        # About as far from the fp32 numbers as the straightforward block under autocast.
        fast_error = (fast_result - exact).abs().max()
        bound = 2 * (ref_bf16 - exact).abs().max() + 0.01 * exact.abs().max()
        assert fast_error <= bound, (fast_error, bound)


def hidden_sized_saved_tensors(block, x):
    """Number of distinct (N, H, W, 4C)-sized tensors autograd keeps for one block forward."""
    hidden_numel = x.numel() * 4
    storages = set()

    def pack(t):
        if t.numel() == hidden_numel:
            storages.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = block(x.requires_grad_())
    del out
    return len(storages)


def test_recompute_grn_keeps_one_hidden_activation():
    """The memory claim of recompute_grn: one (N, H, W, 4C) tensor kept instead of three
    (pre-activation, GELU output and GRN output)."""
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    assert hidden_sized_saved_tensors(make_block(recompute_grn=True), x) == 1
    assert hidden_sized_saved_tensors(make_block(recompute_grn=False), x) == 3


def test_backbone_stays_channels_last():
    """No block sees (or makes) a copy in another memory format: the stem's LayerNorm2d turns
    the NCHW image into channels_last and everything after keeps it."""
    model = ConvNeXtV2(dict(depths=[1, 2, 1, 1], channels=[8, 16, 24, 32]))
    seen = []
    for block in model.modules():
        if isinstance(block, ConvNeXtV2Block):
            block.register_forward_hook(lambda m, args, out: seen.append(
                (args[0].is_contiguous(memory_format=torch.channels_last),
                 out.is_contiguous(memory_format=torch.channels_last))))
    mask = torch.zeros(2, 2, 2)
    mask[:, 0, 1] = 1
    for m in (None, mask):
        model(torch.randn(2, 3, 64, 64), m)
    assert seen == [(True, True)] * 10


@pytest.mark.slow
@pytest.mark.parametrize('recompute_grn', [False, True])
def test_compiled_block_matches_eager(recompute_grn):
    """torch.compile traces the fused functions and gives the eager numbers."""
    torch._dynamo.reset()
    block = make_block(16, recompute_grn=recompute_grn).train()
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(7))
    x = x.contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(block)
    expected = block_outputs_and_grads(block, lambda b, x, v: b(x, v), x, None)
    actual = block_outputs_and_grads(block, lambda b, x, v: compiled(x, v), x, None)
    assert_all_close(actual, expected, rtol=1e-4, atol=1e-4)
