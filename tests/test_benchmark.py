# Copyright (c) mmcnx2 contributors. All rights reserved.
"""tools/analysis_tools/benchmark.py on a tiny arch: it runs, and its JSON holds real numbers."""
import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARK = Path(__file__).parents[1] / 'tools' / 'analysis_tools' / 'benchmark.py'
TINY_ARCH = '{"depths": [1, 1, 1, 1], "channels": [8, 16, 32, 64]}'
MODELS = ('mmcnx2', 'timm_convnextv2', 'timm_convnext', 'mmcnx2_fcmae')


@pytest.fixture(scope='module')
def bench_tool():
    spec = importlib.util.spec_from_file_location('benchmark', BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_writes_json(bench_tool, tmp_path):
    out = tmp_path / 'bench.json'
    bench_tool.main([
        '--arch', TINY_ARCH, '--batch', '2', '--size', '64', '--warmup', '1', '--iters', '1',
        '--repeats', '1', '--device', 'cpu', '--out', str(out)
    ])
    report = json.loads(out.read_text())

    config = report['config']
    assert config['arch'] == json.loads(TINY_ARCH)
    assert (config['batch'], config['size'], config['dtype']) == (2, 64, 'fp32')
    assert config['machine'].endswith('CPU') and config['threads'] >= 1

    results = report['results']
    assert set(results) == set(MODELS)
    for name, res in results.items():
        assert res['train_img_s'] > 0, name
        assert res['saved_act_mb'] > 0, name
        assert res['params_m'] > 0, name
        assert res['peak_mem_mb'] is None, name  # CUDA only
        if name != 'mmcnx2_fcmae':
            assert res['infer_img_s'] > 0, name
    # Same architecture, same parameter count as timm's V2; V1 differs (layer scale, no GRN).
    assert results['mmcnx2']['params_m'] == pytest.approx(results['timm_convnextv2']['params_m'])
    # The fused GRN keeps fewer activations for backward than timm's GRN (not a timing, so it
    # holds on any machine).
    assert results['mmcnx2']['saved_act_mb'] < results['timm_convnextv2']['saved_act_mb']

    ratios = report['ratios']
    expected = {
        'train_img_s_vs_timm_convnextv2', 'infer_img_s_vs_timm_convnextv2',
        'saved_act_mb_vs_timm_convnextv2', 'train_img_s_vs_timm_convnext',
        'infer_img_s_vs_timm_convnext', 'saved_act_mb_vs_timm_convnext',
        'fcmae_step_time_vs_train_step'
    }
    assert set(ratios) == expected
    assert all(value > 0 for value in ratios.values())
    mmcnx2, timm_v2 = results['mmcnx2'], results['timm_convnextv2']
    assert ratios['train_img_s_vs_timm_convnextv2'] == pytest.approx(
        mmcnx2['train_img_s'] / timm_v2['train_img_s'])


@pytest.mark.slow  # 224 px in bf16 (~20 s on 2 cores)
def test_benchmark_bf16_channels_last_cpu_timer(bench_tool):
    """The GPU setting of the memory target (bf16 autocast, channels_last, GRN recompute as on
    CUDA), run on CPU: the activations kept for backward are a device-independent count."""
    report = bench_tool.main([
        '--arch', 'atto', '--batch', '2', '--size', '224', '--warmup', '1', '--iters', '1',
        '--repeats', '1', '--device', 'cpu', '--dtype', 'bf16', '--channels-last',
        '--recompute-grn', 'on', '--threads', '1', '--timer', 'cpu', '--models', 'mmcnx2',
        'timm_convnextv2'
    ])
    assert report['config']['threads'] == 1
    assert set(report['results']) == {'mmcnx2', 'timm_convnextv2'}
    assert all(res['train_img_s'] > 0 and res['infer_img_s'] > 0
               for res in report['results'].values())
    assert 'fcmae_step_time_vs_train_step' not in report['ratios']
    # Measured 0.49; the target for peak GPU memory is 0.6.
    assert report['ratios']['saved_act_mb_vs_timm_convnextv2'] < 0.55


def test_benchmark_rejects_bad_size(bench_tool, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_tool.parse_args(['--size', '100'])
    assert exit_info.value.code == 2  # argparse's usage error, not a crash
    assert '--size must be a multiple of 32 (FCMAE patch), got 100' in capsys.readouterr().err
    assert bench_tool.parse_args(['--size', '96']).size == 96


def test_benchmark_times_the_fast_path_shares(bench_tool):
    """The variants without the 1x1 convolutions and without the whole fast path run the
    same classifier (same parameters, the formula's activations without the fast path)."""
    report = bench_tool.main([
        '--arch', TINY_ARCH, '--batch', '2', '--size', '64', '--warmup', '1', '--iters', '1',
        '--repeats', '1', '--device', 'cpu', '--models', 'mmcnx2', 'mmcnx2_no_conv1x1',
        'mmcnx2_formula', 'timm_convnextv2'
    ])
    results, ratios = report['results'], report['ratios']
    assert results['mmcnx2_formula']['params_m'] == results['mmcnx2']['params_m']
    # Without the fused GRN the formula keeps timm's activations; the 1x1 convs keep the same.
    assert results['mmcnx2_formula']['saved_act_mb'] == pytest.approx(
        results['timm_convnextv2']['saved_act_mb'])
    assert results['mmcnx2_no_conv1x1']['saved_act_mb'] == results['mmcnx2']['saved_act_mb']
    for part in ('conv1x1', 'fast_path'):
        for key in ('train_img_s', 'infer_img_s'):
            assert ratios[f'{key}_speedup_from_{part}'] > 0
