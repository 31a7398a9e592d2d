# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Plain helpers that several test modules call: a free loopback port for torchrun, the losses
a run logged, and the tiny UperNet config the CPU trainings use."""
import glob
import json
import os.path as osp
import socket

from mmcnx2.datasets.synthetic import CLASSES, PALETTE

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
UPERNET_ATTO = osp.join(REPO, 'configs', 'upernet',
                        'upernet_convnextv2-atto_8xb2-amp-160k_ade20k-512x512.py')


def free_port() -> str:
    """A TCP port free on 127.0.0.1 now (for torchrun's rendezvous), as a string."""
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


def logged_losses(work_dir) -> list:
    """The total loss of every logger line (mean over the logging interval), in order."""
    scalars, = glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json'))
    with open(scalars) as f:
        rows = [json.loads(line) for line in f]
    return [row['loss'] for row in rows if 'loss' in row]


# The real atto UperNet config (absolute ``_base_`` path) with only what a CPU needs changed:
# 64 px crops, narrow heads, BN instead of SyncBN (CPU gloo has no SyncBN), fp32 instead of
# AMP (AmpOptimWrapper needs a GPU) and a short schedule; model, layer decay and the ADE20K
# pipelines stay the real ones.
TINY_UPERNET_CONFIG = """
_base_ = {base!r}
randomness = dict(seed=0)
num_classes = {num_classes}
crop_size = (64, 64)
norm_cfg = dict(type='BN', requires_grad=True)  # SyncBN needs CUDA
pretrained = None  # no weights here: random init
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=None),
    decode_head=dict(channels=32, num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=dict(channels=16, num_classes=num_classes, norm_cfg=norm_cfg),
    test_cfg=dict(_delete_=True, mode='whole'))

check_seg_map = dict(type='CheckSegMap', num_classes=num_classes)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    check_seg_map,
    dict(type='RandomResize', scale=(128, 64), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    check_seg_map,
    dict(type='PackSegInputs'),
]
# The synthetic classes are not ADE20K's, so the generic dataset with ADE20K's file layout.
dataset = dict(
    type='BaseSegDataset',
    data_root={data_root!r},
    metainfo=dict(classes={classes!r}, palette={palette!r}),
    reduce_zero_label=True,
    img_suffix='.jpg',
    seg_map_suffix='.png')
train_dataloader = dict(
    batch_size={batch_size},
    num_workers=0,
    persistent_workers=False,
    dataset=dict(dataset, pipeline=train_pipeline))
val_dataloader = dict(
    num_workers=0, persistent_workers=False, dataset=dict(dataset, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_cfg = None  # evaluated by the test runs instead
val_dataloader = None
val_evaluator = None

# AmpOptimWrapper needs a GPU: the same optimizer and layer decay in fp32.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(_base_.optim_wrapper.optimizer, lr={lr}),
    constructor=_base_.optim_wrapper.constructor,
    paramwise_cfg=_base_.optim_wrapper.paramwise_cfg)
param_scheduler = [
    dict(type='PolyLR', power=1.0, eta_min=0., by_epoch=False, begin=0, end={iters})]
train_cfg = dict(max_iters={iters}, val_interval={iters})
default_hooks = dict(
    logger=dict(interval={log_interval}),
    checkpoint=dict(interval={iters}))
"""


def write_tiny_upernet_config(path, data_root, iters, lr, batch_size, log_interval):
    path.write_text(
        TINY_UPERNET_CONFIG.format(
            base=UPERNET_ATTO,
            num_classes=len(CLASSES),
            data_root=data_root,
            classes=CLASSES,
            palette=PALETTE,
            batch_size=batch_size,
            lr=lr,
            iters=iters,
            log_interval=log_interval))
    return str(path)
