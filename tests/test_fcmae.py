# Copyright (c) mmcnx2 contributors. All rights reserved.
import glob
import importlib.util
import os
import os.path as osp
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner, set_random_seed
from mmpretrain.registry import MODELS
from PIL import Image

from helpers_runs import free_port, logged_losses
from mmcnx2.datasets.synthetic import make_synthetic_world
from mmcnx2.models import ConvNeXtV2
from mmcnx2.models.heads import FCMAEHead

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG_DIR = osp.join(REPO, 'configs', 'fcmae')
TINY_ARCH = dict(depths=[1, 1, 2, 1], channels=[8, 16, 32, 64])
P = 32


def build_fcmae(norm_pix=True, mask_ratio=0.6, init='official'):
    return MODELS.build(
        dict(
            type='FCMAE',
            mask_ratio=mask_ratio,
            init=init,
            backbone=dict(
                type='ConvNeXtV2',
                arch=TINY_ARCH,
                out_indices=(3, ),
                gap_before_final_norm=False,
                out_norms=False),
            neck=dict(type='FCMAEDecoder', in_channels=64, decoder_dim=32),
            head=dict(type='FCMAEHead', norm_pix=norm_pix),
            data_preprocessor=dict(
                mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], to_rgb=True)))


def randomise_(module):
    """Random values for every parameter (GRN and LN included), so no layer is an identity."""
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0, 0.5)


# ------------------------------------------------------------------ sparse encoder
def test_sparse_encoder_exact_at_every_stage():
    torch.manual_seed(0)
    # The stage outputs themselves, not their output norms.
    backbone = ConvNeXtV2(TINY_ARCH, out_indices=(0, 1, 2, 3), gap_before_final_norm=False,
                          out_norms=False)
    randomise_(backbone)
    x = torch.randn(2, 3, 96, 128)
    mask = torch.tensor([[[0, 1, 0, 0], [1, 1, 0, 1], [0, 0, 1, 0]],
                         [[1, 0, 0, 1], [0, 1, 0, 0], [1, 0, 1, 1]]]).float()
    removed_px = mask.repeat_interleave(P, 1).repeat_interleave(P, 2)[:, None].bool()
    x_changed = torch.where(removed_px, x + 5 * torch.randn_like(x), x)

    with torch.no_grad():
        outs = backbone(x, mask)
        outs_changed = backbone(x_changed, mask)
        dense, dense_changed = backbone(x), backbone(x_changed)
    for i, (out, out_changed) in enumerate(zip(outs, outs_changed)):
        scale = P // (4 * 2**i)
        removed = mask.repeat_interleave(scale, 1).repeat_interleave(scale, 2)[:, None]
        removed = removed.bool().expand_as(out)
        assert (out[removed] == 0).all() and (out_changed[removed] == 0).all(), i
        assert (out - out_changed)[~removed].abs().max() <= 1e-6, i
        # Without the mask the change does leak into visible sites: the check above bites.
        assert (dense[i] - dense_changed[i])[~removed].abs().max() > 1e-2, i

    with torch.no_grad():
        all_visible = backbone(x, torch.zeros(2, 3, 4))
    for out, ref in zip(all_visible, dense):
        assert torch.equal(out, ref)


# ------------------------------------------------------------------ masking
def test_random_mask_keeps_int_l_times_one_minus_ratio():
    model = build_fcmae()
    mask = model.random_mask(torch.zeros(6, 3, 224, 224))
    assert mask.shape == (6, 7, 7)
    assert set(mask.unique().tolist()) == {0., 1.}
    assert (1 - mask).sum((1, 2)).tolist() == [int(49 * 0.4)] * 6  # 19 kept per sample
    assert len({tuple(m.flatten().tolist()) for m in mask}) == 6  # per-sample masks

    mask = build_fcmae(mask_ratio=0.75).random_mask(torch.zeros(3, 3, 160, 224))
    assert mask.shape == (3, 5, 7)
    assert (1 - mask).sum((1, 2)).tolist() == [int(35 * 0.25)] * 3


def test_random_mask_follows_the_run_seed():
    model = build_fcmae()
    x = torch.zeros(4, 3, 224, 224)
    set_random_seed(3)
    first = model.random_mask(x)
    set_random_seed(3)
    assert torch.equal(model.random_mask(x), first)
    set_random_seed(4)
    assert not torch.equal(model.random_mask(x), first)


def test_bad_sizes_raise():
    model = build_fcmae()
    with pytest.raises(ValueError, match='100x100'):
        model.loss(torch.zeros(1, 3, 100, 100), [])
    with pytest.raises(ValueError, match='mask_ratio'):
        build_fcmae(mask_ratio=1.0)


# ------------------------------------------------------------------ loss
def reference_loss(pred, img, mask, norm_pix):
    """The loss written out from its definition, one removed patch at a time."""
    losses = []
    for n, i, j in mask.nonzero().tolist():
        patch = img[n, :, i * P:(i + 1) * P, j * P:(j + 1) * P]
        target = patch.permute(1, 2, 0).reshape(-1)  # pixels in (p, q, c) order
        if norm_pix:
            target = (target - target.mean()) / (target.var() + 1e-6).sqrt()
        losses.append(((pred[n, :, i, j] - target)**2).mean())
    return torch.stack(losses).mean()


@pytest.mark.parametrize('norm_pix', [True, False])
def test_loss_only_on_removed_patches_and_matches_definition(norm_pix):
    torch.manual_seed(0)
    head = FCMAEHead(norm_pix=norm_pix)
    img = torch.rand(2, 3, 64, 96) * 4 - 2
    mask = torch.tensor([[[1, 0, 0], [0, 1, 1]], [[0, 0, 1], [1, 0, 0]]]).float()

    target = head.construct_target(img)  # (N, L, p*p*3)
    removed = mask.flatten(1)[..., None].bool()
    pred = torch.where(removed, target, 10 * torch.randn_like(target))
    pred = pred.transpose(1, 2).reshape(2, P * P * 3, 2, 3)  # decoder layout
    assert head.loss(pred, img, mask).item() < 1e-10

    pred = torch.randn(2, P * P * 3, 2, 3)
    loss = head.loss(pred, img, mask)
    assert loss.item() > 0.5
    assert torch.allclose(loss, reference_loss(pred, img, mask, norm_pix), rtol=1e-5)


@pytest.mark.parametrize('norm_pix', [True, False])
def test_pred_to_image_inverts_the_target(norm_pix):
    head = FCMAEHead(norm_pix=norm_pix)
    img = torch.rand(2, 3, 64, 96) * 255
    pred = head.construct_target(img).transpose(1, 2).reshape(2, P * P * 3, 2, 3)
    assert torch.allclose(head.pred_to_image(pred, img), img, atol=1e-3)


# ------------------------------------------------------------------ modules and checkpoint
def test_decoder_layout_and_init():
    model = build_fcmae(init='convnext')  # the decoder's own init (official: test_recipes.py)
    model.init_weights()
    neck = {k: tuple(v.shape) for k, v in model.neck.state_dict().items()}
    assert neck['proj.weight'] == (32, 64, 1, 1)
    assert neck['mask_token'] == (1, 32, 1, 1)
    assert neck['decoder.0.depthwise_conv.weight'] == (32, 1, 7, 7)
    assert neck['decoder.0.grn.gamma'] == (128, )
    assert neck['pred.weight'] == (P * P * 3, 32, 1, 1)
    assert {k.split('.')[0] for k in neck} == {'proj', 'mask_token', 'decoder', 'pred'}
    assert 0.01 < model.neck.pred.weight.std().item() < 0.03
    assert model.neck.pred.bias.abs().sum() == 0
    assert 0.005 < model.neck.mask_token.std().item() < 0.04

    keys = list(model.state_dict())
    assert {k.split('.')[0] for k in keys} == {'backbone', 'neck'}  # the head has no weights
    assert not [k for k in keys if re.match(r'backbone\.norm\d', k)]  # no output norm


def test_decoder_puts_mask_token_at_removed_sites():
    model = build_fcmae()
    model.init_weights()
    proj = model.neck.proj
    latent = torch.randn(1, 64, 2, 2)
    mask = torch.tensor([[[1., 0.], [0., 1.]]])
    captured = {}
    model.neck.decoder.register_forward_hook(lambda m, i, o: captured.update(x=i[0]))
    model.neck(latent, mask)
    x = captured['x']
    token = model.neck.mask_token[0, :, 0, 0]
    assert torch.equal(x[0, :, 0, 0], token) and torch.equal(x[0, :, 1, 1], token)
    assert torch.allclose(x[0, :, 0, 1], proj(latent)[0, :, 0, 1])


def test_configs_follow_the_official_recipe():
    sizes = list(ConvNeXtV2.arch_settings)
    files = sorted(glob.glob(osp.join(CONFIG_DIR, '*_in1k.py')))
    assert len(files) == 2 * len(sizes)
    for file in files:
        name = osp.basename(file)
        size, gpus, batch, epochs = re.match(
            r'fcmae_convnextv2-(\w+)_(\d+)xb(\d+)-coslr-(\d+)e_in1k\.py', name).groups()
        cfg = Config.fromfile(file)
        assert int(gpus) * int(batch) == 4096 and cfg.train_dataloader.batch_size == int(batch)
        assert cfg.model.backbone.arch == size, name
        assert cfg.model.neck.in_channels == ConvNeXtV2.arch_settings[size]['channels'][-1]
        assert (cfg.model.neck.decoder_dim, cfg.model.neck.decoder_depth) == (512, 1)
        assert cfg.model.mask_ratio == 0.6 and cfg.model.head.norm_pix
        optimizer = cfg.optim_wrapper.optimizer
        assert optimizer.type == 'AdamW' and optimizer.betas == (0.9, 0.95)
        assert optimizer.lr == pytest.approx(1.5e-4 * 4096 / 256)
        assert optimizer.weight_decay == 0.05
        assert cfg.auto_scale_lr.base_batch_size == 4096
        warmup, cosine = cfg.param_scheduler
        assert (warmup.type, warmup.begin, warmup.end) == ('LinearLR', 0, 40)
        assert (cosine.type, cosine.begin, cosine.end) == ('CosineAnnealingLR', 40, int(epochs))
        assert cosine.T_max == int(epochs) - 40 and cosine.eta_min == 0
        assert cfg.train_cfg.max_epochs == int(epochs)
        dataset = cfg.train_dataloader.dataset
        assert (dataset.type, dataset.data_root, dataset.split) == \
            ('CheckedImageNet', 'data/imagenet/', 'train')  # mmpretrain's ImageNet + checks
        crop, flip = dataset.pipeline[1:3]
        assert (crop.type, crop.scale, crop.crop_ratio_range, crop.interpolation) == \
            ('RandomResizedCrop', 224, (0.2, 1.0), 'bicubic')
        assert (flip.type, flip.prob) == ('RandomFlip', 0.5)


# ------------------------------------------------------------------ training
def write_config(tmp_path, data_root, iters, batch_size, lr_warmup, interval,
                 init='official'):
    """A tiny run of the real atto config: own data, smaller arch and images, iterations
    (and the FCMAE ``init``)."""
    base = osp.join(CONFIG_DIR, 'fcmae_convnextv2-atto_64xb64-coslr-800e_in1k.py')
    text = f"""
_base_ = '{base}'
model = dict(
    init='{init}',
    backbone=dict(arch=dict(_delete_=True, depths=[1, 1, 1, 1], channels=[16, 32, 64, 128])),
    neck=dict(in_channels=128, decoder_dim=64))
train_dataloader = dict(
    batch_size={batch_size}, num_workers=0, persistent_workers=False,
    dataset=dict(data_root='{data_root}', pipeline=[
        dict(type='LoadImageFromFile'),
        dict(type='RandomResizedCrop', scale=96, crop_ratio_range=(0.5, 1.0),
             backend='pillow', interpolation='bicubic'),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackInputs')]))
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={iters})
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end={lr_warmup}),
    dict(type='CosineAnnealingLR', T_max={iters - lr_warmup}, eta_min=0., by_epoch=False,
         begin={lr_warmup}, end={iters})]
log_processor = dict(by_epoch=False)
default_hooks = dict(
    logger=dict(interval={interval}),
    checkpoint=dict(by_epoch=False, interval={iters}, max_keep_ckpts=1))
"""
    path = tmp_path / 'fcmae_tiny.py'
    path.write_text(text)
    return str(path)


@pytest.fixture(scope='module')
def imagenet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('world')
    return make_synthetic_world(
        str(root), num_train=64, num_val=0, image_size=96, layouts=('imagenet', ))['imagenet']


@pytest.mark.slow
def test_fcmae_learns_through_runner(tmp_path, imagenet_root):
    # The ConvNeXt init: the official one (std-1 convs, the configs' default) spends these
    # 300 iterations shrinking its output scale, measured 2.90 -> 0.963, i.e. about the loss
    # of predicting zeros (1.0), which says nothing about reconstruction.
    cfg = Config.fromfile(
        write_config(tmp_path, imagenet_root, iters=300, batch_size=16, lr_warmup=20,
                     interval=20, init='convnext'))
    cfg.work_dir = str(tmp_path / 'work')
    Runner.from_cfg(cfg).train()
    # Means over iterations 1-4 (lr still ~0, i.e. the initial loss), then every 20.
    losses = logged_losses(cfg.work_dir)
    print(f'FCMAE reconstruction losses: {losses}')
    # Measured: 1.000 -> 0.639 (norm_pix targets, 9 patches of 32x32, 5 removed); predicting
    # zeros gives 1.0.
    assert losses[-1] < 0.7 * losses[0] and losses[-1] < 0.7


def run(cmd, **env):
    result = subprocess.run(
        cmd, cwd=REPO, env={**os.environ, 'OMP_NUM_THREADS': '1', **env},
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_dist_train_checkpoint_feeds_backbone_and_visualizer(tmp_path, imagenet_root):
    config = write_config(
        tmp_path, imagenet_root, iters=4, batch_size=4, lr_warmup=2, interval=1)
    work_dir = tmp_path / 'work'
    run(['bash', 'tools/dist_train.sh', config, '2', '--work-dir', str(work_dir)],
        PORT=free_port())
    checkpoint = str(work_dir / 'iter_4.pth')
    log, = glob.glob(str(work_dir / '*' / '*.log'))
    assert 'GPU number: 2' in open(log).read()  # mmengine's name for the world size

    backbone = ConvNeXtV2(
        dict(depths=[1, 1, 1, 1], channels=[16, 32, 64, 128]),
        out_indices=(0, 1, 2, 3),
        gap_before_final_norm=False,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.'))
    backbone.init_weights()
    saved = torch.load(checkpoint, map_location='cpu', weights_only=False)['state_dict']
    for name, value in backbone.state_dict().items():
        if not name.startswith('norm'):
            assert torch.equal(value, saved['backbone.' + name]), name

    image = sorted(glob.glob(osp.join(imagenet_root, 'train', '*', '*')))[0]
    run([sys.executable, 'tools/visualize_fcmae.py', config, checkpoint, image, '--out',
         str(tmp_path / 'vis'), '--size', '96'])
    grid = np.asarray(Image.open(tmp_path / 'vis' / (osp.splitext(osp.basename(image))[0] +
                                                      '.png')))
    assert grid.shape == (96, 4 * 96, 3)
    original, masked, _, pasted = np.split(grid.astype(int), 4, axis=1)
    visible = masked.reshape(3, P, 3, P, 3).any(axis=(1, 3, 4))  # removed patches are black
    assert visible.sum() == int(9 * 0.4)
    patches = lambda a: a.reshape(3, P, 3, P, 3).transpose(0, 2, 1, 3, 4)  # noqa: E731
    assert (patches(pasted)[visible] == patches(original)[visible]).all()
    assert (patches(masked)[visible] == patches(original)[visible]).all()
    assert (patches(pasted)[~visible] != patches(original)[~visible]).any()


def test_reconstruction_panels_paste_into_removed_patches():
    spec = importlib.util.spec_from_file_location(
        'visualize_fcmae', osp.join(REPO, 'tools', 'visualize_fcmae.py'))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    model = build_fcmae()
    model.init_weights()
    inputs = torch.randn(2, 3, 64, 96)
    torch.manual_seed(0)
    panels = tool.reconstruction_panels(model.eval(), inputs)
    torch.manual_seed(0)
    pred, mask = model.reconstruct(inputs)
    std, mean = model.data_preprocessor.std, model.data_preprocessor.mean
    recon = model.head.pred_to_image(pred, inputs) * std + mean
    removed = mask.repeat_interleave(P, 1).repeat_interleave(P, 2)[:, None].bool()
    removed = removed.expand_as(inputs)
    original = inputs * std + mean
    assert torch.allclose(panels[0], original)
    assert (panels[1][removed] == 0).all()
    assert torch.allclose(panels[2], recon)
    assert torch.allclose(panels[3][removed], recon[removed])
    assert torch.allclose(panels[3][~removed], original[~removed])
