# Copyright (c) mmcnx2 contributors. All rights reserved.
"""tools/dist_*.sh and tools/slurm_*.sh hand torchrun / srun the command lines OpenMMLab users
expect. torchrun and srun are replaced by recorders on PATH; dist_train.sh also runs for real
in the FCMAE, Mask R-CNN, UperNet and reliability tests."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
