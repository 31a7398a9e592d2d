# Copyright (c) mmcnx2 contributors. All rights reserved.
"""tools/dist_*.sh and tools/slurm_*.sh hand torchrun / srun the command lines OpenMMLab users
expect. torchrun and srun are replaced by recorders on PATH; dist_train.sh also runs for real
in the FCMAE, Mask R-CNN, UperNet and reliability tests, on two "nodes" and through
slurm_train.sh with a stand-in srun in tests/test_scale.py. Also the CPU launch helpers of
mmcnx2.engine.launch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.config import Config

from mmcnx2.engine.launch import export_slurm_env, prepare_cpu_strategy

TOOLS = Path(__file__).parents[1] / 'tools'
RECORDER = f'''#!{sys.executable}
import json, os, sys
with open(os.environ['RECORD'], 'w') as f:
    json.dump(dict(argv=sys.argv[1:], master_port=os.environ.get('MASTER_PORT'),
                   pythonpath=os.environ['PYTHONPATH'].split(':')[0]), f)
'''


@pytest.fixture
def launch(tmp_path):
    """Runs ``bash tools/<script> args`` with recording torchrun and srun; returns the record."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    for name in ('torchrun', 'srun'):
        (bin_dir / name).write_text(RECORDER)
        (bin_dir / name).chmod(0o755)

    def run(script, *args, **env):
        record = tmp_path / 'record.json'
        env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', RECORD=str(record),
                   **env)
        subprocess.run(['bash', str(TOOLS / script), *args], env=env, check=True,
                       capture_output=True)
        return json.loads(record.read_text())

    return run


def test_dist_train_and_test_command_lines(launch):
    rendezvous = ['--nnodes=1', '--node_rank=0', '--master_addr=127.0.0.1']
    record = launch('dist_train.sh', 'cfg.py', '4', '--resume', '--cfg-options', 'a=1')
    assert record['argv'] == rendezvous + [
        '--nproc_per_node=4', '--master_port=29500', f'{TOOLS}/train.py', 'cfg.py',
        '--launcher', 'pytorch', '--resume', '--cfg-options', 'a=1'
    ]
    assert Path(record['pythonpath']).resolve() == TOOLS.parent

    record = launch('dist_test.sh', 'cfg.py', 'ckpt.pth', '2', '--tta', NNODES='2',
                    NODE_RANK='1', MASTER_ADDR='10.0.0.1', PORT='29600')
    assert record['argv'] == [
        '--nnodes=2', '--node_rank=1', '--master_addr=10.0.0.1', '--nproc_per_node=2',
        '--master_port=29600', f'{TOOLS}/test.py', 'cfg.py', 'ckpt.pth', '--launcher',
        'pytorch', '--tta'
    ]


def test_slurm_train_and_test_command_lines(launch):
    record = launch('slurm_train.sh', 'gpu', 'ft', 'cfg.py', 'work', '--resume')
    assert record['argv'] == [
        '-p', 'gpu', '--job-name=ft', '--gres=gpu:8', '--ntasks=8', '--ntasks-per-node=8',
        '--cpus-per-task=5', '--kill-on-bad-exit=1', 'python', '-u', f'{TOOLS}/train.py',
        'cfg.py', '--work-dir=work', '--launcher=slurm', '--resume'
    ]
    assert record['master_port'] == '29500'

    record = launch('slurm_test.sh', 'gpu', 'eval', 'cfg.py', 'ckpt.pth', '--tta', GPUS='16',
                    GPUS_PER_NODE='4', CPUS_PER_TASK='2', SRUN_ARGS='--qos=high --time=1:00',
                    PORT='29700')
    assert record['argv'] == [
        '-p', 'gpu', '--job-name=eval', '--gres=gpu:4', '--ntasks=16', '--ntasks-per-node=4',
        '--cpus-per-task=2', '--kill-on-bad-exit=1', '--qos=high', '--time=1:00', 'python',
        '-u', f'{TOOLS}/test.py', 'cfg.py', 'ckpt.pth', '--launcher=slurm', '--tta'
    ]
    assert record['master_port'] == '29700'
    assert Path(record['pythonpath']).resolve() == TOOLS.parent


def test_multi_node_needs_master_addr(launch, tmp_path):
    with pytest.raises(subprocess.CalledProcessError) as error:
        launch('dist_train.sh', 'cfg.py', '8', NNODES='2', NODE_RANK='1')
    assert b'NNODES=2 needs MASTER_ADDR' in error.value.stderr
    assert not (tmp_path / 'record.json').exists()  # torchrun never started


def test_slurm_env_becomes_torch_env(tmp_path, monkeypatch):
    """What mmengine's slurm launcher derives from srun's variables, without CUDA."""
    scontrol = tmp_path / 'scontrol'
    scontrol.write_text('#!/bin/sh\n[ "$*" = "show hostname gpu[07-08]" ] && '
                        'printf "gpu07\\ngpu08\\n"\n')
    scontrol.chmod(0o755)
    monkeypatch.setenv('PATH', f'{tmp_path}:{os.environ["PATH"]}')
    environ = dict(SLURM_PROCID='9',
                   SLURM_NTASKS='16', SLURM_LOCALID='1', SLURM_NODELIST='gpu[07-08]',
                   MASTER_PORT='29700')
    export_slurm_env(environ)
    assert {k: environ[k] for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                                    'MASTER_PORT')} == dict(
        RANK='9', WORLD_SIZE='16', LOCAL_RANK='1', MASTER_ADDR='gpu07', MASTER_PORT='29700')

    environ = dict(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_NODELIST='n1',
                   MASTER_ADDR='10.0.0.1')  # kept; no scontrol needed
    export_slurm_env(environ)
    assert (environ['MASTER_ADDR'], environ['MASTER_PORT'], environ['LOCAL_RANK']) == \
        ('10.0.0.1', '29500', '0')

    with pytest.raises(KeyError, match='missing: SLURM_NTASKS, SLURM_NODELIST'):
        export_slurm_env(dict(SLURM_PROCID='0'))


def test_cpu_strategy():
    """FlexibleRunner strategies point at the CPU; what a config chose stays."""
    cfg = Config(dict(runner_type='FlexibleRunner', strategy=dict(type='DDPStrategy')))
    prepare_cpu_strategy(cfg)
    assert cfg.strategy.model_wrapper == dict(
        type='MMDistributedDataParallel', broadcast_buffers=False, device_ids=None)
    cfg = Config(dict(runner_type='FlexibleRunner', strategy=dict(
        type='FSDPStrategy', model_wrapper=dict(use_orig_params=True))))
    prepare_cpu_strategy(cfg)
    assert cfg.strategy.model_wrapper == dict(use_orig_params=True, device_id='cpu')
    cfg = Config(dict(runner_type='FlexibleRunner', strategy=dict(
        type='FSDPStrategy', model_wrapper=dict(device_id=3))))
    prepare_cpu_strategy(cfg)
    assert cfg.strategy.model_wrapper.device_id == 3
    cfg = Config(dict(model_wrapper_cfg=None))  # the default Runner: not a strategy's business
    prepare_cpu_strategy(cfg)
    assert cfg.to_dict() == dict(model_wrapper_cfg=None)
