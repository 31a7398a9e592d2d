# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Fixtures shared by several test modules. A module asks for what it needs
(``pytestmark = pytest.mark.usefixtures('mmpretrain_scope')``); the one autouse fixture gives
every module the default scope it would have if it ran alone. Plain helpers that tests call
directly live in ``helpers_runs.py`` (runs: ports, logged losses, the tiny UperNet config),
``checkpoint_formats.py`` (reference models and checkpoint layouts), ``crafted_checkpoints.py``
(attack files) and ``toy_runner.py`` (mmengine toy trainings)."""
import pytest
import torch
from mmengine.registry import DefaultScope

from mmcnx2.datasets import make_synthetic_world


@pytest.fixture(scope='module', autouse=True)
def default_scope_of_the_module_alone():
    """A Runner makes its ``default_scope`` the process's (mmengine's toy runner: 'mmengine'),
    which would decide the registry that later modules build from: a test would pass alone and
    fail after another module. Restores what the module started with."""
    saved = DefaultScope._instance_dict.copy()  # what overwrite_default_scope restores, too
    yield
    DefaultScope._instance_dict = saved


@pytest.fixture
def mmpretrain_scope():
    """Build in mmpretrain's scope whatever scope an earlier test's runner left behind."""
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


@pytest.fixture(scope='module')
def safe_loading():
    """What tools/train.py and the configs' custom_imports do (idempotent, left installed)."""
    from mmcnx2.engine import install_safe_checkpoint_loading
    install_safe_checkpoint_loading()


@pytest.fixture(scope='module')
def imagenet_layout(tmp_path_factory):
    """A generated ImageNet-layout set: 8 training and 4 validation images of 96 px."""
    root = str(tmp_path_factory.mktemp('world'))
    return make_synthetic_world(root, num_train=8, num_val=4, image_size=96,
                                layouts=('imagenet', ))['imagenet']


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
