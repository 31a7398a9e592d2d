# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Throughput and memory of mmcnx2's ConvNeXt V2 against timm, in one process.

Models (each a classifier: backbone + global pool + LayerNorm + Linear, cross-entropy loss):
``mmcnx2`` (our ``ConvNeXtV2`` + ``nn.Linear``), ``timm_convnextv2`` (timm's
``convnextv2_<arch>``) and ``timm_convnext`` (timm's V1 ``convnext_<arch>``, where timm has that
size). ``mmcnx2_fcmae`` is one FCMAE pretraining step (masked encoder + decoder + loss) of the
same arch, compared with the ``mmcnx2`` train step at the same batch. The shares of the blocks'
fast path (:mod:`mmcnx2.models.utils.fast_block`): ``mmcnx2_no_conv1x1`` is ``mmcnx2`` with
the pointwise layers as Linears instead of 1x1 convolutions (the fast path's CPU part),
``mmcnx2_formula`` with the whole fast path off (every block runs its formula).

Every model gets the same warm-up, then the models run in turn (A B C A B C ...) for
``--repeats`` rounds of ``--iters`` steps each, so drifts in machine load hit all of them alike;
the median round is reported. Train step = forward + backward + optimizer step.

Memory: ``peak_mem_mb`` is ``torch.cuda.max_memory_allocated`` over one train step (CUDA only,
'n/a' on CPU where no allocator statistic is exact); ``saved_act_mb`` is the size of the
activations autograd keeps for backward in one eager forward (device independent).

Example::

    python tools/analysis_tools/benchmark.py --arch atto --batch 32 --size 224 \\
        --out work_dirs/bench_atto.json
    python tools/analysis_tools/benchmark.py --arch base --batch 128 --dtype bf16 \\
        --channels-last --device cuda --compile
    # the fast path's shares
    python tools/analysis_tools/benchmark.py --arch atto --batch 16 --threads 1 --timer cpu \\
        --models mmcnx2 mmcnx2_no_conv1x1 mmcnx2_formula timm_convnextv2
"""
import argparse
import json
import logging
import platform
import statistics
import time
from contextlib import ExitStack
from typing import Callable, Dict, Optional

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.logging import MMLogger
from mmpretrain.registry import MODELS
from timm.models.convnext import ConvNeXt

from mmcnx2.models import ConvNeXtV2  # importing mmcnx2 also registers FCMAE
from mmcnx2.models.utils import fast_block

NUM_CLASSES = 1000
# mmcnx2 with a part of the fast path switched off (fast_block.switched_off).
VARIANTS = {'mmcnx2_no_conv1x1': 'conv1x1', 'mmcnx2_formula': 'fast_path'}
MODELS_TIMED = ['mmcnx2', 'timm_convnextv2', 'timm_convnext', 'mmcnx2_fcmae', *VARIANTS]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='atto',
                        help='ConvNeXtV2 arch name, or a JSON dict with "depths" and '
                        '"channels" (e.g. \'{"depths": [1,1,1,1], "channels": [8,16,32,64]}\')')
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--size', type=int, default=224, help='input side (multiple of 32)')
    parser.add_argument('--dtype', choices=['fp32', 'bf16'], default='fp32',
                        help='bf16 = torch.autocast with bfloat16')
    parser.add_argument('--channels-last', action='store_true',
                        help='models and inputs in torch.channels_last')
    parser.add_argument('--compile', action='store_true', help='torch.compile every model')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--optimizer', choices=['sgd', 'adamw'], default='sgd')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch\'s)')
    parser.add_argument('--timer', choices=['wall', 'cpu'], default='wall',
                        help='cpu = process CPU time: steadier than wall time on a CPU shared '
                        'with other jobs (use with --threads 1; CUDA needs wall)')
    parser.add_argument('--warmup', type=int, default=2, help='steps per model before timing')
    parser.add_argument('--iters', type=int, default=3, help='steps per timed round')
    parser.add_argument('--repeats', type=int, default=5, help='timed rounds per model')
    parser.add_argument('--recompute-grn', choices=['auto', 'on', 'off'], default='auto',
                        help="mmcnx2's recompute_grn (auto: on CUDA only); 'on' on CPU shows "
                        'the activation memory the CUDA default keeps')
    parser.add_argument('--models', nargs='+',
                        default=['mmcnx2', 'timm_convnextv2', 'timm_convnext', 'mmcnx2_fcmae'],
                        choices=MODELS_TIMED)
    parser.add_argument('--out', help='write the results to this JSON file')
    args = parser.parse_args(argv)
    if args.arch.lstrip().startswith('{'):
        args.arch = json.loads(args.arch)
    if args.timer == 'cpu' and args.device != 'cpu':
        parser.error('--timer cpu measures CPU work; use --timer wall on CUDA')
    if args.size % 32:
        parser.error(f'--size must be a multiple of 32 (FCMAE patch), got {args.size}')
    return args


class Classifier(nn.Module):
    """mmcnx2 backbone (pool + output LayerNorm inside) followed by a linear head."""

    def __init__(self, arch, recompute_grn=None):
        super().__init__()
        self.backbone = ConvNeXtV2(arch, recompute_grn=recompute_grn)
        self.backbone.init_weights()
        self.head = nn.Linear(self.backbone.channels[-1], NUM_CLASSES)

    def forward(self, x):
        return self.head(self.backbone(x)[-1])


def build_timm(arch, v2: bool) -> Optional[nn.Module]:
    """timm's ConvNeXt (V2 when ``v2``) of ``arch``; None where timm has no such size."""
    if isinstance(arch, dict):
        # Same layout as timm's tiny and larger models (Linear MLP over channels-last).
        extra = dict(use_grn=True, ls_init_value=None) if v2 else {}
        return ConvNeXt(depths=arch['depths'], dims=arch['channels'],
                        num_classes=NUM_CLASSES, **extra)
    name = f'convnextv2_{arch}' if v2 else f'convnext_{arch}'
    if name not in timm.list_models(name):
        return None
    return timm.create_model(name, pretrained=False, num_classes=NUM_CLASSES)


def build_fcmae(arch, recompute_grn=None) -> nn.Module:
    _, channels = ConvNeXtV2._parse_arch(arch)
    model = MODELS.build(
        dict(
            type='FCMAE',
            backbone=dict(
                type='ConvNeXtV2',
                arch=arch,
                gap_before_final_norm=False,
                out_norms=False,
                recompute_grn=recompute_grn),
            neck=dict(type='FCMAEDecoder', in_channels=channels[-1]),
            head=dict(type='FCMAEHead', norm_pix=True)))
    model.init_weights()
    return model


def saved_activation_mb(model: nn.Module, forward: Callable) -> float:
    """MB of distinct non-parameter tensors autograd saves during ``forward()``."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(storages.values()) / 2**20


class Runner:
    """One model with its input, optimizer and step functions."""

    def __init__(self, name: str, model: nn.Module, args):
        self.name, self.args = name, args
        self.switched_off = VARIANTS.get(name)
        self.device = torch.device(args.device)
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=fmt)
        self.images = torch.randn(args.batch, 3, args.size, args.size,
                                  device=self.device).contiguous(memory_format=fmt)
        self.labels = torch.randint(0, NUM_CLASSES, (args.batch, ), device=self.device)
        opt = torch.optim.AdamW if args.optimizer == 'adamw' else torch.optim.SGD
        kwargs = dict(lr=1e-4) if args.optimizer == 'adamw' else dict(lr=1e-4, momentum=0.9)
        self.optimizer = opt(self.model.parameters(), **kwargs)
        self.fcmae = name.endswith('fcmae')
        # Compile whole steps' forward parts (FCMAE's entry point is ``loss``, not forward).
        self.train_loss = torch.compile(self.eager_loss) if args.compile else self.eager_loss
        self.infer = torch.compile(self.model) if args.compile else self.model

    def context(self) -> ExitStack:
        """Autocast with ``--dtype bf16``; a variant's part of the fast path switched off."""
        stack = ExitStack()
        if self.args.dtype == 'bf16':
            stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
        if self.switched_off:
            stack.enter_context(fast_block.switched_off(self.switched_off))
        return stack

    def eager_loss(self) -> torch.Tensor:
        if self.fcmae:
            return self.model.loss(self.images, [])['loss']
        return F.cross_entropy(self.model(self.images).float(), self.labels)

    def train_step(self):
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        with self.context():
            loss = self.train_loss()
        loss.backward()
        self.optimizer.step()

    @torch.inference_mode()
    def infer_step(self):
        self.model.eval()
        with self.context():
            self.infer(self.images)

    def sync(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)

    def timed(self, step: Callable, iters: int) -> float:
        """Images per second over ``iters`` steps."""
        clock = time.process_time if self.args.timer == 'cpu' else time.perf_counter
        self.sync()
        start = clock()
        for _ in range(iters):
            step()
        self.sync()
        return self.args.batch * iters / (clock() - start)

    def memory(self) -> Dict[str, Optional[float]]:
        self.model.train()
        with self.context():
            saved = saved_activation_mb(self.model, self.eager_loss)
        peak = None
        if self.device.type == 'cuda':
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.train_step()
            self.sync()
            peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        return dict(saved_act_mb=saved, peak_mem_mb=peak)


def alternate(runners, step_name: str, args) -> Dict[str, float]:
    """Median images/s per runner, runs interleaved A B C A B C ... after warm-up."""
    for runner in runners:
        runner.timed(getattr(runner, step_name), args.warmup)
    rounds = {runner.name: [] for runner in runners}
    for _ in range(args.repeats):
        for runner in runners:
            rounds[runner.name].append(runner.timed(getattr(runner, step_name), args.iters))
    return {name: statistics.median(values) for name, values in rounds.items()}


def run(args) -> dict:
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return measure(args)
    finally:
        torch.set_num_threads(threads)  # run() may be called from a longer-lived process


def measure(args) -> dict:
    torch.manual_seed(0)
    recompute_grn = dict(auto=None, on=True, off=False)[args.recompute_grn]
    builders = dict(
        mmcnx2=lambda: Classifier(args.arch, recompute_grn),
        timm_convnextv2=lambda: build_timm(args.arch, v2=True),
        timm_convnext=lambda: build_timm(args.arch, v2=False),
        mmcnx2_fcmae=lambda: build_fcmae(args.arch, recompute_grn),
        **{variant: lambda: Classifier(args.arch, recompute_grn) for variant in VARIANTS})
    runners = []
    for name in args.models:
        model = builders[name]()
        if model is not None:
            runners.append(Runner(name, model, args))
    results = {r.name: dict(params_m=sum(p.numel() for p in r.model.parameters()) / 1e6)
               for r in runners}
    for r in runners:
        results[r.name].update(r.memory())
    for name, value in alternate(runners, 'train_step', args).items():
        results[name]['train_img_s'] = value
    classifiers = [r for r in runners if not r.fcmae]
    for name, value in alternate(classifiers, 'infer_step', args).items():
        results[name]['infer_img_s'] = value
    return dict(config=config_of(args), results=results, ratios=ratios(results))


def ratios(results: dict) -> dict:
    """Speed ratios (> 1 = mmcnx2 faster), memory ratios (< 1 = mmcnx2 smaller), the FCMAE
    step time over the plain train step (both mmcnx2, same batch) and the speed-ups from the
    fast path and from its CPU kernels (``mmcnx2`` over a variant without them)."""
    ours = results.get('mmcnx2')
    out = {}
    if ours is None:
        return out
    for ref in ('timm_convnextv2', 'timm_convnext'):
        if ref not in results:
            continue
        theirs = results[ref]
        for key in ('train_img_s', 'infer_img_s'):
            out[f'{key}_vs_{ref}'] = ours[key] / theirs[key]
        for key in ('saved_act_mb', 'peak_mem_mb'):
            if ours[key] is not None and theirs[key]:
                out[f'{key}_vs_{ref}'] = ours[key] / theirs[key]
    if 'mmcnx2_fcmae' in results:
        out['fcmae_step_time_vs_train_step'] = (
            ours['train_img_s'] / results['mmcnx2_fcmae']['train_img_s'])
    for variant, part in VARIANTS.items():
        if variant in results:
            for key in ('train_img_s', 'infer_img_s'):
                out[f'{key}_speedup_from_{part}'] = ours[key] / results[variant][key]
    return out


def cpu_model() -> str:
    """The CPU's model name (as ``lscpu`` prints it), or the architecture where unknown."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:  # not Linux
        pass
    return platform.processor() or platform.machine()


def config_of(args) -> dict:
    config = {k: v for k, v in vars(args).items() if k != 'out'}
    device = torch.device(args.device)
    config.update(
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        machine=(torch.cuda.get_device_name(device) if device.type == 'cuda' else
                 f'{cpu_model()} CPU'))
    config['timm'] = timm.__version__
    return config


def format_table(report: dict) -> str:
    results, ratios_ = report['results'], report['ratios']
    ref = results.get('timm_convnextv2')
    cols = ('train_img_s', 'infer_img_s', 'saved_act_mb', 'peak_mem_mb')
    lines = [f"{'model':<22}" + ''.join(f'{c:>14}' for c in cols) + f"{'train vs v2':>13}"]
    for name, res in results.items():
        cells = ''.join(f"{'n/a' if res.get(c) is None else format(res[c], '.1f'):>14}"
                        for c in cols)
        vs = (f"{res['train_img_s'] / ref['train_img_s']:.2f}x" if ref and name !=
              'mmcnx2_fcmae' else '')
        lines.append(f'{name:<22}{cells}{vs:>13}')
    lines += [f'{k}: {v:.3f}' for k, v in ratios_.items()]
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    # mmengine logs every parameter's initialisation at INFO; only warnings matter here.
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    report = run(args)
    config = report['config']
    print(f"arch={config['arch']} batch={args.batch} size={args.size} dtype={args.dtype} "
          f"channels_last={args.channels_last} compile={args.compile} "
          f"recompute_grn={args.recompute_grn} on {config['machine']} "
          f"({config['threads']} threads, {args.timer} time), torch {config['torch']}")
    print(format_table(report))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == '__main__':
    main()
