# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Scale-out, as the README's "Scale" section describes it: multi-node launches of
tools/dist_train.sh and tools/slurm_train.sh, FlexibleRunner + FSDP, gradient accumulation
for fewer GPUs than the recipe, and resuming on another number of processes.

Everything runs on CPU with gloo: a "node" is a launcher process of this machine, and the
nodes meet on 127.0.0.1. The trainings use the demo configs (configs/demo) on a small
synthetic world for a few iterations.
"""
import glob
import json
import os
import os.path as osp
import signal
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmpretrain.registry import MODELS

from helpers_runs import free_port, logged_losses
from mmcnx2.datasets.synthetic import make_synthetic_world
from mmcnx2.engine import load_checkpoint_file
from mmcnx2.engine.hooks import TotalBatchHook, TotalBatchMismatchError

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO = {
    'fcmae': osp.join(REPO, 'configs/demo/fcmae_convnextv2-atto_1xb16-200it_synthetic-96.py'),
    'upernet': osp.join(REPO,
                        'configs/demo/upernet_convnextv2-atto_1xb4-150it_synthetic-96x96.py'),
}
FSDP_CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', '*', 'fsdp', '*.py')))
ITERS = 4
TINY_ARCH = dict(depths=[1, 1, 2, 1], channels=[8, 16, 32, 64])


def start(cmd, **env):
    # One OpenMP thread per process everywhere: torchrun only sets OMP_NUM_THREADS=1 with more
    # than one process per node, and the thread count changes float reduction order.
    return subprocess.Popen(
        cmd, cwd=REPO, env={**os.environ, 'OMP_NUM_THREADS': '1', **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)  # a process group: torchrun's workers end with it


def finish(*procs, timeout=300):
    """Wait for every process, asserting it succeeded; returns their outputs. Ends all of
    them (with their workers) when one fails or hangs."""
    outs = []
    try:
        for proc in procs:
            outs.append(proc.communicate(timeout=timeout)[0])
            assert proc.returncode == 0, f'{" ".join(proc.args)} failed:\n{outs[-1][-5000:]}'
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    return outs


def state_dict(checkpoint):
    return load_checkpoint_file(checkpoint)['state_dict']


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    return make_synthetic_world(
        str(tmp_path_factory.mktemp('world')), num_train=32, num_val=4, image_size=96,
        layouts=('imagenet', 'ade'))


def demo_args(kind, world, work_dir, batch_size=2, iters=ITERS):
    """tools/train.py arguments: a short run of the demo config on ``world``, on CPU."""
    options = [
        f'train_cfg.max_iters={iters}', f'train_dataloader.batch_size={batch_size}',
        'train_dataloader.num_workers=0', 'train_dataloader.persistent_workers=False',
        f'default_hooks.checkpoint.interval={iters}', 'default_hooks.logger.interval=1'
    ]
    if kind == 'fcmae':
        options.append(f'train_dataloader.dataset.data_root={world["imagenet"]}')
    else:
        options += [
            f'train_dataloader.dataset.data_root={world["ade"]}',
            f'val_dataloader.dataset.data_root={world["ade"]}', 'val_dataloader.num_workers=0',
            'val_dataloader.persistent_workers=False', 'model.backbone.init_cfg=None',
            # torch's SyncBatchNorm needs CUDA
            'model.decode_head.norm_cfg.type=BN', 'model.auxiliary_head.norm_cfg.type=BN'
        ]
    return [DEMO[kind], '--work-dir', str(work_dir), '--cfg-options', *options]


@pytest.fixture(scope='module')
def one_node(world, tmp_path_factory):
    """The reference: a demo config on one node with 2 processes (tools/dist_train.sh),
    trained on first use; returns its work dir."""
    work_dirs = {}

    def reference(kind):
        if kind not in work_dirs:
            work_dir = tmp_path_factory.mktemp(f'one_node_{kind}')
            config, *args = demo_args(kind, world, work_dir)
            finish(start(['bash', 'tools/dist_train.sh', config, '2', *args], PORT=free_port()))
            work_dirs[kind] = work_dir
        return work_dirs[kind]

    return reference


def assert_same_training(work_dir, reference):
    assert logged_losses(work_dir) == logged_losses(reference)
    assert len(logged_losses(work_dir)) == ITERS
    saved, expected = (state_dict(osp.join(d, f'iter_{ITERS}.pth')) for d in (work_dir, reference))
    assert saved.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(saved[name], value), name


# ----------------------------------------------------------------------------- multi-node
@pytest.mark.slow
@pytest.mark.parametrize('kind', list(DEMO))
def test_two_nodes_train_as_one(kind, world, one_node, tmp_path):
    """NNODES=2 (1 process each) gives the bits of 1 node x 2 processes: same global ranks,
    sampler shards and per-rank seeds, and gloo sums two gradients to the same bits in
    either order. Each node has its own work dir, as separate machines would."""
    port = free_port()
    nodes = []
    for node_rank in range(2):
        config, *args = demo_args(kind, world, tmp_path / f'node{node_rank}')
        nodes.append(
            start(['bash', 'tools/dist_train.sh', config, '1', *args], NNODES='2',
                  NODE_RANK=str(node_rank), MASTER_ADDR='127.0.0.1', PORT=port))
    finish(*nodes)
    log, = glob.glob(str(tmp_path / 'node0' / '*' / '*.log'))
    assert 'GPU number: 2' in open(log).read()  # mmengine's name for the world size
    assert_same_training(tmp_path / 'node0', one_node(kind))


FAKE_SRUN = f'''#!{sys.executable}
"""srun stand-in: starts the --ntasks tasks of the command on this machine, each with the
SLURM_* variables srun sets, and ends them all when one fails (--kill-on-bad-exit)."""
import os, subprocess, sys, time
args, options = sys.argv[1:], {{}}
while args[0].startswith('-'):
    key = args.pop(0)
    key, value = (key, args.pop(0)) if key == '-p' else key.partition('=')[::2]
    options[key] = value
ntasks, per_node = int(options['--ntasks']), int(options['--ntasks-per-node'])
nodes = -(-ntasks // per_node)
tasks = [
    subprocess.Popen(args, env=dict(
        os.environ, SLURM_PROCID=str(rank), SLURM_NTASKS=str(ntasks),
        SLURM_LOCALID=str(rank % per_node), SLURM_NODEID=str(rank // per_node),
        SLURM_NNODES=str(nodes), SLURM_NODELIST=f'node[0-{{nodes - 1}}]',
        SLURM_JOB_NAME=options['--job-name'])) for rank in range(ntasks)]
while any(task.poll() is None for task in tasks):
    if any(task.poll() for task in tasks):
        for task in tasks:
            task.kill()
    time.sleep(0.2)
sys.exit(max(task.returncode for task in tasks))
'''
FAKE_SCONTROL = '#!/bin/sh\n# scontrol show hostname LIST: every "node" is this machine\n' \
    'echo 127.0.0.1\necho 127.0.0.1\n'


@pytest.mark.slow
def test_slurm_train_without_slurm(world, one_node, tmp_path):
    """tools/slurm_train.sh with srun and scontrol stand-ins: 2 tasks on 2 "nodes" of one
    task each train as the torchrun reference does."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name, text in (('srun', FAKE_SRUN), ('scontrol', FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    os.symlink(sys.executable, bin_dir / 'python')  # slurm_run.sh runs `python`
    config, _, work_dir, *args = demo_args('fcmae', world, tmp_path / 'work')
    finish(
        start(['bash', 'tools/slurm_train.sh', 'cpu', 'fcmae', config, work_dir, *args],
              PATH=f'{bin_dir}:{os.environ["PATH"]}', GPUS='2', GPUS_PER_NODE='1',
              CPUS_PER_TASK='1', PORT=free_port()))
    assert_same_training(tmp_path / 'work', one_node('fcmae'))


# ------------------------------------------------------------------------ fewer GPUs
def tiny_fcmae():
    cfg = Config.fromfile(DEMO['fcmae'])
    cfg.model.backbone.arch = TINY_ARCH
    cfg.model.neck.update(in_channels=TINY_ARCH['channels'][-1], decoder_dim=16)
    cfg.model.data_preprocessor = cfg.data_preprocessor
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return cfg, model


def fcmae_batch(images):
    from mmpretrain.structures import DataSample
    return dict(inputs=images, data_samples=[DataSample() for _ in images])  # default_collate


def train_steps(cfg, model, batches, masks, accumulative_counts):
    """``model.train_step`` on each batch with the given per-sample masks, through the
    config's optimizer (AdamW). Returns the gradients the optimizer stepped with (the last
    step's), the parameter update and the losses."""
    from mmengine.optim import build_optim_wrapper
    optim_wrapper = build_optim_wrapper(
        model, dict(cfg.optim_wrapper, accumulative_counts=accumulative_counts))
    names = {p: name for name, p in model.named_parameters()}
    grads = {}
    optim_wrapper.optimizer.register_step_pre_hook(lambda *_: grads.update(
        {names[p]: p.grad.clone() for p in names if p.grad is not None}))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    losses = []
    for batch, mask in zip(batches, masks):
        model.random_mask = lambda inputs, mask=mask: mask  # noqa: E731
        losses.append(float(model.train_step(batch, optim_wrapper)['loss'].detach()))
    update = {name: p.detach() - before[name] for name, p in model.named_parameters()}
    return grads, update, losses


def test_accumulation_gives_the_update_of_the_larger_batch():
    """2 x accumulation at batch 2 = one step at batch 4, with the lr unchanged: every image
    keeps int(L * 0.4) patches, so the FCMAE loss of 4 images is the mean of the losses of
    its halves, and ConvNeXt V2 has no BatchNorm. The masks are drawn once for the 4 images
    and split, so both runs see the same per-sample masks."""
    cfg, model = tiny_fcmae()
    images = torch.randint(0, 256, (4, 3, 96, 96), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    masks = model.random_mask(torch.zeros(4, 3, 96, 96))
    halves = [fcmae_batch(images[:2]), fcmae_batch(images[2:])]
    half_masks = [masks[:2], masks[2:]]
    big_grads, big, (big_loss, ) = train_steps(
        cfg, tiny_fcmae()[1], [fcmae_batch(images)], [masks], 1)
    grads, accumulated, losses = train_steps(cfg, model, halves, half_masks, 2)
    # mmengine logs each micro-batch's loss before dividing it by the count.
    assert big_loss == pytest.approx(sum(losses) / 2, rel=1e-6)
    assert grads.keys() == big_grads.keys() and len(grads) == len(big)
    for name, grad in big_grads.items():  # float32 summation order only
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-6 * grad.abs().max())
    # AdamW's first step is ~lr per element; the gradients' last-bit differences move it by
    # at most 1e-3 lr (where a gradient is near AdamW's eps).
    lr = cfg.optim_wrapper.optimizer.lr
    assert max(d.abs().max() for d in big.values()) > 0.5 * lr
    for name, delta in big.items():
        torch.testing.assert_close(accumulated[name], delta, rtol=0, atol=1e-3 * lr)

    # Without accumulation the same two half-batches make two different steps.
    _, separate, _ = train_steps(cfg, tiny_fcmae()[1], halves, half_masks, 1)
    assert max((separate[n] - big[n]).abs().max() for n in big) > 0.5 * lr


# --------------------------------------------------------------- resume, other world size
def stub_runner(world_size, batch_size, accumulative_counts=1, iteration=0, sampler=None):
    return SimpleNamespace(
        world_size=world_size, iter=iteration,
        train_dataloader=SimpleNamespace(batch_size=batch_size, batch_sampler=sampler),
        optim_wrapper=SimpleNamespace(_accumulative_counts=accumulative_counts))


def resume(saved_runner, runner):
    checkpoint = dict(meta=dict(iter=10))
    TotalBatchHook().before_save_checkpoint(saved_runner, checkpoint)
    hook = TotalBatchHook()
    hook.after_load_checkpoint(runner, checkpoint)
    hook.before_train(runner)
    return checkpoint


def test_total_batch_recorded_and_checked_at_resume():
    checkpoint = resume(stub_runner(2, 4), stub_runner(2, 4, iteration=10))
    assert checkpoint['meta']['total_batch'] == dict(
        world_size=2, batch_size=4, accumulative_counts=1)
    # The same 8 images per iteration on 1 or 4 processes resume.
    resume(stub_runner(2, 4), stub_runner(1, 8, iteration=10))
    resume(stub_runner(1, 8), stub_runner(4, 2, iteration=10))
    # mmdet's AspectRatioBatchSampler: the batch size is the sampler's.
    resume(stub_runner(2, 4), stub_runner(2, None, 1, 10, SimpleNamespace(batch_size=4)))
    # load_from (a new run at iteration 0) may change anything.
    resume(stub_runner(2, 4), stub_runner(1, 4, iteration=0))

    with pytest.raises(TotalBatchMismatchError) as error:
        resume(stub_runner(2, 4), stub_runner(1, 4, iteration=10))
    message = str(error.value)
    assert '8 images per iteration (2 processes x 4) when it was saved, 4 now (1 process x 4)' \
        in message
    assert 'Resume with train_dataloader.batch_size=8 on 1 process or 2 processes with ' \
        'train_dataloader.batch_size=4 (--cfg-options)' in message
    with pytest.raises(TotalBatchMismatchError,
                       match=r'8 now \(2 processes x 4\).*batch_size=2 on 2 processes or 1 proc'):
        resume(stub_runner(1, 4), stub_runner(2, 4, iteration=10))
    with pytest.raises(TotalBatchMismatchError, match='3 processes with'):
        resume(stub_runner(3, 1), stub_runner(2, 1, iteration=10))  # 3 does not split in 2
    with pytest.raises(TotalBatchMismatchError, match='accumulative_counts=2 when it was saved'):
        resume(stub_runner(1, 4, 2), stub_runner(1, 4, 1, iteration=10))
    # Checkpoints written without the hook resume as before.
    hook = TotalBatchHook()
    hook.after_load_checkpoint(None, dict(meta=dict(iter=10)))
    hook.before_train(stub_runner(1, 4, iteration=10))


@pytest.mark.slow
def test_resume_fcmae_saved_by_two_processes_on_one(world, one_node, tmp_path):
    """The 2-process reference run (2 x 2 images) resumed on 1 process: refused with batch
    2, continued with batch 4 (the same 4 images per iteration)."""
    work_dir = tmp_path / 'work'
    subprocess.run(['cp', '-r', str(one_node('fcmae')), str(work_dir)], check=True)
    config, *args = demo_args('fcmae', world, work_dir, iters=ITERS + 2)
    saved = str(work_dir / f'iter_{ITERS}.pth')
    proc = start([sys.executable, 'tools/train.py', config, '--resume', saved, *args])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert 'TotalBatchMismatchError' in out and \
        'train_dataloader.batch_size=4 on 1 process' in out, out[-3000:]
    assert not (work_dir / f'iter_{ITERS + 2}.pth').exists()

    config, *args = demo_args('fcmae', world, work_dir, batch_size=4, iters=ITERS + 2)
    finish(start([sys.executable, 'tools/train.py', config, '--resume', saved, *args]))
    checkpoint = load_checkpoint_file(work_dir / f'iter_{ITERS + 2}.pth')
    assert checkpoint['meta']['total_batch'] == dict(
        world_size=1, batch_size=4, accumulative_counts=1)
    assert checkpoint['meta']['iter'] == ITERS + 2


# ------------------------------------------------------------------------------- FSDP
@pytest.mark.slow  # parses 14 configs (~8 s)
def test_fsdp_configs_change_only_the_engine():
    """Each configs/*/fsdp/ leaf is its parent recipe with FlexibleRunner + FSDPStrategy
    (block-level wrapping, original parameters, full checkpoints), with_cp, and bf16 from
    FSDP (a plain OptimWrapper) or, for Mask R-CNN, the recipe's fp16 AMP with
    ShardedGradScaler."""
    assert len(FSDP_CONFIGS) == 7
    engine_keys = {'runner_type', 'strategy', 'optim_wrapper'}
    for path in FSDP_CONFIGS:
        cfg = Config.fromfile(path)
        parent = Config.fromfile(osp.join(osp.dirname(osp.dirname(path)), _parent_name(path)))
        assert cfg.runner_type == 'FlexibleRunner'
        strategy = cfg.strategy
        assert strategy.type == 'FSDPStrategy' and strategy.state_dict_cfg == 'full'
        wrapper = strategy.model_wrapper
        assert wrapper.auto_wrap_policy == 'convnextv2_block_wrap_policy'
        assert wrapper.use_orig_params
        assert cfg.model.backbone.with_cp
        optim, parent_optim = cfg.optim_wrapper, parent.optim_wrapper
        assert optim.optimizer == parent_optim.optimizer
        assert optim.paramwise_cfg == parent_optim.paramwise_cfg
        if '/mask_rcnn/' in path:
            assert wrapper.mixed_precision is None
            assert optim.type == parent_optim.type and optim.use_fsdp
            assert optim.constructor == 'LayerDecayOptimWrapperConstructor'
        else:
            assert wrapper.mixed_precision == dict(
                param_dtype='bfloat16', reduce_dtype='float32', buffer_dtype='float32')
            # No autocast, no loss scaling: a plain OptimWrapper once built.
            assert optim.type == 'OptimWrapper' and 'loss_scale' not in optim or (
                optim.type == 'AmpOrFp32OptimWrapper' and optim.amp is False)
            assert optim.constructor in ('LayerDecayOptimWrapperConstructor',
                                         'FSDPOptimWrapperConstructor')
        if 'with_cp' in parent.model.backbone:
            assert parent.model.backbone.with_cp  # Mask R-CNN large/huge: set by the recipe
        else:
            del cfg.model.backbone['with_cp']
        mine = {k: v for k, v in cfg.to_dict().items() if k not in engine_keys}
        theirs = {k: v for k, v in parent.to_dict().items() if k not in engine_keys}
        assert mine == theirs, path


def _parent_name(path):
    """configs/x/fsdp/<name with _fsdp_ and the precision> -> configs/x/<recipe name>."""
    name = osp.basename(path).replace('_fsdp', '')
    return name.replace('-bf16-', '-' if name.startswith('fcmae') else '-amp-')


FSDP_GROUPS_SCRIPT = r'''
"""Per rank: each config's optimizer groups built through mmengine's FSDPStrategy, next to
the groups of the unwrapped model; then one bf16 FCMAE step through the strategy."""
import collections, copy, json, sys

import torch
import torch.distributed as dist
from mmengine._strategy import FSDPStrategy
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS, init_default_scope
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

import mmcnx2  # noqa: F401
from mmcnx2.engine.fsdp import unwrapped_name
from mmcnx2.engine.launch import prepare_cpu_strategy

out, work_dir, arch, paths = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4:]
dist.init_process_group('gloo')


def tiny(cfg):
    channels = arch['channels']
    cfg.model.backbone.update(arch=arch, init_cfg=None)
    if cfg.default_scope == 'mmpretrain':
        cfg.model.neck.update(in_channels=channels[-1], decoder_dim=16)
        cfg.model.data_preprocessor = cfg.data_preprocessor
    elif cfg.default_scope == 'mmdet':
        cfg.model.neck.update(in_channels=channels, out_channels=16)
    else:
        cfg.model.decode_head.update(in_channels=channels, channels=16)
        cfg.model.auxiliary_head.update(in_channels=channels[2], channels=8)
    return cfg


def groups(model, optim_wrapper):
    """{parameter name: [lr, weight decay]}; every optimizer parameter must be a model's."""
    names = {id(p): unwrapped_name(n) for n, p in model.named_parameters()}
    return {names[id(p)]: [g['lr'], g['weight_decay']]
            for g in optim_wrapper.optimizer.param_groups for p in g['params']}


def through_fsdp(cfg, optim_wrapper_cfg):
    prepare_cpu_strategy(cfg)
    kwargs = copy.deepcopy(cfg.strategy)
    kwargs.pop('type')
    strategy = FSDPStrategy(work_dir=work_dir, **kwargs)
    torch.manual_seed(0)
    strategy.prepare(MODELS.build(cfg.model), optim_wrapper=copy.deepcopy(optim_wrapper_cfg))
    return strategy


results = {}
for path in paths:
    cfg = tiny(Config.fromfile(path))
    init_default_scope(cfg.default_scope)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    strategy = through_fsdp(cfg, cfg.optim_wrapper)
    assert isinstance(strategy.model, FSDP)
    results[path] = dict(
        unwrapped=groups(model, build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))),
        fsdp=groups(strategy.model, strategy.optim_wrapper),
        units=collections.Counter(
            type(m.module).__name__ for m in strategy.model.modules() if isinstance(m, FSDP)))
    if cfg.default_scope == 'mmpretrain':
        # mmengine's own constructor under FSDP, for comparison.
        plain = through_fsdp(
            cfg, dict(cfg.optim_wrapper, constructor='DefaultOptimWrapperConstructor'))
        results['plain ' + path] = groups(plain.model, plain.optim_wrapper)

        # One bf16 step (with_cp) through the strategy against the fp32 unwrapped model
        # holding the same weights, with the same images and masks.
        with FSDP.summon_full_params(strategy.model):
            model.load_state_dict(
                {unwrapped_name(n): p.detach().clone().float()
                 for n, p in strategy.model.named_parameters()})
        from mmpretrain.structures import DataSample
        images = torch.randint(0, 256, (2, 3, 96, 96), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(dist.get_rank()))
        data = dict(inputs=images, data_samples=[DataSample(), DataSample()])
        mask = model.random_mask(torch.zeros(2, 3, 96, 96))
        model.random_mask = strategy.model.module.random_mask = lambda inputs: mask
        fp32_loss = model.train_step(
            data, build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper)))
        bf16_loss = strategy.model.train_step(data, strategy.optim_wrapper)
        results['bf16 step'] = dict(fp32=float(fp32_loss['loss']), bf16=float(bf16_loss['loss']),
                                    dtype=str(next(strategy.model.parameters()).dtype))
with open(f'{out}.rank{dist.get_rank()}.json', 'w') as f:
    json.dump(results, f)
'''


@pytest.fixture(scope='module')
def fsdp_groups(tmp_path_factory):
    """FSDP_GROUPS_SCRIPT with 2 processes on one FSDP config of each kind."""
    tmp = tmp_path_factory.mktemp('fsdp')
    script = tmp / 'fsdp_groups.py'
    script.write_text(FSDP_GROUPS_SCRIPT)
    paths = [p for p in FSDP_CONFIGS if '1600e' in p or '8xb2-amp-1x' in p or '512x512' in p]
    finish(start(['torchrun', '--nproc_per_node=2', f'--master_port={free_port()}',
                  str(script), str(tmp / 'groups'), str(tmp / 'work'), json.dumps(TINY_ARCH),
                  *paths]), timeout=600)
    return paths, [json.load(open(tmp / f'groups.rank{rank}.json')) for rank in range(2)]


@pytest.mark.slow
def test_fsdp_keeps_layer_decay_and_no_decay_groups(fsdp_groups):
    """Through mmengine's FSDPStrategy (2 processes, gloo, CPU) every parameter gets the lr
    (layer decay) and weight decay it gets without FSDP, on every rank."""
    paths, ranks = fsdp_groups
    assert len(paths) == 3
    for results in ranks:
        for path in paths:
            unwrapped, fsdp = results[path]['unwrapped'], results[path]['fsdp']
            assert fsdp == unwrapped, path
            # One unit per block (+ the FCMAE decoder's), the root, and under bf16 FSDP's
            # fp32 units for BatchNorm (UperNet: 12 in UPerHead, 1 in the FCN head).
            units = results[path]['units']
            assert units.pop('ConvNeXtV2Block') == sum(TINY_ARCH['depths']) + ('fcmae' in path)
            assert units == {'fcmae': {'FCMAE': 1}, 'mask_rcnn': {'MaskRCNN': 1},
                             'upernet': {'EncoderDecoder': 1, 'SyncBatchNorm': 13}}[
                                 osp.basename(osp.dirname(osp.dirname(path)))], units
            decays = {wd for _, wd in unwrapped.values()}
            assert decays == {0.0, 0.05}, path  # 1-D parameters (norms, biases, GRN): none
            if 'fcmae' not in path:
                lrs = {lr for lr, _ in unwrapped.values()}
                # Tiny arch, 'group' mode: layers 0-3 and 6 in the backbone, 7 outside it.
                assert len(lrs) == 6, path
        # What mmengine's own constructor does under FSDP: every parameter is a flat shard,
        # so flat_decay_mult=0 takes the weight decay from every weight; only the GRN
        # parameters keep it, through the config's custom_keys.
        fcmae = next(p for p in paths if 'fcmae' in p)
        plain, ours = results['plain ' + fcmae], results[fcmae]['fsdp']
        decayed = {name for name, (_, wd) in ours.items() if wd}
        assert 'backbone.stages.0.0.pointwise_conv1.weight' in decayed
        assert {name for name, (_, wd) in plain.items() if wd} == {
            name for name in decayed if '.grn.' in name}


@pytest.mark.slow
def test_fsdp_bf16_step_matches_fp32(fsdp_groups):
    """bf16 parameters (FSDP's mixed precision) and with_cp in every block: the FCMAE loss
    of the first step is the fp32 loss of the same weights within bf16 precision."""
    for results in fsdp_groups[1]:
        step = results['bf16 step']
        assert step['dtype'] == 'torch.float32'  # sharded master weights stay fp32
        assert step['bf16'] == pytest.approx(step['fp32'], rel=1e-2)  # measured 0.03, 0.3 %


FSDP_DEMO = """
_base_ = [{demo!r}, {strategy!r}]
model = dict(backbone=dict(with_cp=True))
optim_wrapper = dict(constructor='FSDPOptimWrapperConstructor')
"""


@pytest.mark.slow
def test_fsdp_trains_through_the_tools_as_ddp(world, one_node, tmp_path):
    """tools/dist_train.sh with FlexibleRunner + the FSDP configs' strategy (in fp32, with_cp,
    2 processes) trains the FCMAE demo as the DDP reference does, and writes an ordinary
    (full) checkpoint."""
    config = tmp_path / 'fcmae_fsdp.py'
    config.write_text(FSDP_DEMO.format(
        demo=DEMO['fcmae'], strategy=osp.join(REPO, 'configs', '_base_',
                                              'convnextv2_fsdp_strategy.py')))
    _, *args = demo_args('fcmae', world, tmp_path / 'work')
    finish(start(['bash', 'tools/dist_train.sh', str(config), '2', *args,
                         'strategy.model_wrapper.mixed_precision=None'], PORT=free_port()))
    # Bit-identical: the same forward (FSDP's views of the original parameters), and
    # FSDP's reduce-scatter halves each gradient before summing two (exact) where DDP halves
    # the sum. The checkpoint is a single full file with DDP's keys (chain, tools/test.py).
    assert_same_training(tmp_path / 'work', one_node('fcmae'))
    checkpoint = load_checkpoint_file(tmp_path / 'work' / f'iter_{ITERS}.pth')
    assert checkpoint['meta']['total_batch'] == dict(
        world_size=2, batch_size=2, accumulative_counts=1)
    # FSDP's full optimizer state is keyed by parameter name, torch's by index.
    assert 'backbone.downsample_layers.0.0.weight' in checkpoint['optimizer']['state']
