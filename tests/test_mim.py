# Copyright (c) mmcnx2 contributors. All rights reserved.
"""mmcnx2 as an OpenMMLab package for mim: ``mim search``, ``mim download``, ``mim train``.

mim finds a package's model index, configs and tools in ``<installed package>/.mim``, which
``setup.py`` fills: copies in a built wheel or sdist, links in an editable install. The mim
commands run as a user runs them, in a new process, against mmcnx2 built as a wheel from this
checkout and installed into a folder of its own. Downloads come from a loopback server.
"""
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch
from checkpoint_formats import TOL, LoopbackServer, timm_reference, write_official_files

import mmcnx2
from mmcnx2.converters import convert_state_dict
from mmcnx2.engine.checkpoint import load_checkpoint_file
from mmcnx2.converters import OFFICIAL_URL_PREFIX

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
FINE_TUNED = 'convnextv2-atto_fcmae-pre_3rdparty_in1k'
DEMO_FINETUNE = 'convnextv2-atto_fcmae-pre_1xb16-150it_synthetic-96.py'
# What a wheel is built from (setup.py, MANIFEST.in and what they name).
SOURCES = ('setup.py', 'MANIFEST.in', 'README.md', 'requirements.txt', 'model-index.yml',
           'mmcnx2', 'configs', 'tools')


# pip wheel + install and mim subprocesses: the whole module is slow.
pytestmark = [pytest.mark.usefixtures('mmpretrain_scope'), pytest.mark.slow]


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp('served')
    timm_model, x, logits, _ = timm_reference('atto')
    official, _ = write_official_files(root / 'convnext' / 'convnextv2', timm_model)
    with LoopbackServer(root) as server:
        yield dict(root=root, weights_url=f'{server.url}/convnext/convnextv2/', x=x,
                   logits=logits, ours=convert_state_dict(official)[1])


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """mmcnx2 as ``pip install mmcnx2`` gives it: a wheel built from a copy of this checkout,
    installed into a folder of its own (first on PYTHONPATH in the processes below)."""
    root = tmp_path_factory.mktemp('wheel')
    ignore = shutil.ignore_patterns('__pycache__', '.mim', '*.egg-info')
    for name in SOURCES:
        source = osp.join(REPO, name)
        if osp.isdir(source):
            shutil.copytree(source, root / 'src' / name, ignore=ignore)
        else:
            (root / 'src').mkdir(exist_ok=True)
            shutil.copyfile(source, root / 'src' / name)
    pip = [sys.executable, '-m', 'pip', '-q', '--disable-pip-version-check']
    subprocess.run(pip + ['wheel', '--no-deps', '--no-build-isolation', str(root / 'src'),
                          '-w', str(root / 'dist')], check=True, capture_output=True)
    wheel, = (root / 'dist').glob('mmcnx2-*.whl')
    subprocess.run(pip + ['install', '--no-deps', '--target', str(root / 'site'), str(wheel)],
                   check=True, capture_output=True)
    return root / 'site'


def run_mim(args, cwd, site=None, **env):
    """``python -m mim ARGS`` in a new process; ``site`` goes first on PYTHONPATH."""
    env = dict(os.environ, NO_PROXY='127.0.0.1', **env)
    if site is not None:
        env['PYTHONPATH'] = os.pathsep.join([str(site)] + [env.get('PYTHONPATH', '')])
    done = subprocess.run([sys.executable, '-m', 'mim'] + [str(a) for a in args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout


def test_wheel_carries_the_model_index_configs_and_tools(installed):
    mim_dir = installed / 'mmcnx2' / '.mim'
    assert (mim_dir / 'model-index.yml').is_file()
    assert (mim_dir / 'configs' / 'convnextv2' / 'metafile.yml').is_file()
    assert (mim_dir / 'configs' / '_base_' / 'upernet_convnextv2.py').is_file()
    assert (mim_dir / 'tools' / 'train.py').is_file()


def test_mim_finds_the_development_install(tmp_path):
    """The editable install of tools/install.sh, as mim sees it from any folder."""
    out = run_mim(['search', 'mmcnx2', '--valid-config'], tmp_path)
    assert f"'{FINE_TUNED}'" in out


def test_mim_search_lists_mmcnx2_models(installed, tmp_path):
    out = run_mim(['search', 'mmcnx2', '--valid-config'], tmp_path, installed)
    for name in (FINE_TUNED, 'convnextv2-huge_fcmae-in22k-pre_3rdparty_in1k-512px',
                 'convnextv2-base_3rdparty-fcmae_in1k',
                 'mask-rcnn_convnextv2-base_fpn_8xb4-amp-lsj-3x_coco-1024'):
        assert f"'{name}'" in out
    out = run_mim(['search', 'mmcnx2', '--config', FINE_TUNED, '--field', 'weight',
                   '--display-width', 200], tmp_path, installed)
    assert OFFICIAL_URL_PREFIX + 'im1k/convnextv2_atto_1k_224_ema.pt' in out


def test_mim_download_fetches_official_weights_that_load_by_name(installed, served, tmp_path):
    # The installed index with its official URLs on the loopback.
    for metafile in (installed / 'mmcnx2' / '.mim' / 'configs').glob('*/metafile.yml'):
        metafile.write_text(metafile.read_text().replace(OFFICIAL_URL_PREFIX,
                                                         served['weights_url']))
    run_mim(['download', 'mmcnx2', '--config', FINE_TUNED, '--dest', tmp_path / 'dest'],
            tmp_path, installed)
    downloaded = tmp_path / 'dest' / 'convnextv2_atto_1k_224_ema.pt'
    served_file = served['root'] / 'convnext/convnextv2/im1k/convnextv2_atto_1k_224_ema.pt'
    assert downloaded.read_bytes() == served_file.read_bytes()
    assert (tmp_path / 'dest' / f'{FINE_TUNED}.py').is_file()
    # The official file as downloaded gives the official model, by name.
    model = mmcnx2.get_model(FINE_TUNED, pretrained=str(downloaded))
    with torch.no_grad():
        torch.testing.assert_close(model(served['x'], mode='tensor'), served['logits'],
                                   atol=TOL, rtol=0)


@pytest.mark.parametrize('package', ['mmcnx2', 'mmpretrain'])
def test_mim_train_starts_from_the_pretrained_override(package, installed, served,
                                                       imagenet_layout, tmp_path):
    """``mim train mmcnx2 NAME`` finds the config and mmcnx2's train.py in mmcnx2/.mim;
    ``mim train mmpretrain PATH`` runs mmpretrain's own train.py, which merges
    ``pretrained=URL`` into the top-level key only. Both start from the official weights
    (2 iterations at lr 0 keep them)."""
    config = DEMO_FINETUNE if package == 'mmcnx2' else osp.join(REPO, 'configs', 'demo',
                                                                  DEMO_FINETUNE)
    url = served['weights_url'] + 'im1k/convnextv2_atto_1k_224_ema.pt'
    data = imagenet_layout
    options = [
        f'pretrained={url}', 'optim_wrapper.optimizer.lr=0.', 'train_cfg.max_iters=2',
        'train_dataloader.batch_size=4', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False', f'train_dataloader.dataset.data_root={data}',
        'val_dataloader.num_workers=0', 'val_dataloader.persistent_workers=False',
        f'val_dataloader.dataset.data_root={data}'
    ]
    work_dir = tmp_path / 'work'
    run_mim(['train', package, config, '--work-dir', work_dir, '--cfg-options', *options],
            tmp_path, installed if package == 'mmcnx2' else None,
            TORCH_HOME=str(tmp_path / 'torch_home'))
    state_dict = load_checkpoint_file(work_dir / 'iter_2.pth')['state_dict']
    # lr 0 (1e-10 from the cosine schedule's eta_min) and the EMA's rounding: ~1e-10 changes.
    for key, value in served['ours'].items():
        if key.startswith('backbone.'):
            torch.testing.assert_close(state_dict[key], value, rtol=0, atol=1e-6, msg=key)
