# Copyright (c) mmcnx2 contributors. All rights reserved.
"""From a folder of unlabeled images (any nesting, any format mmcv reads, no label file) to
FCMAE pretraining and on to UperNet / Mask R-CNN on the same domain's ADE/COCO-format data,
with tools/train.py and the documented overrides (configs/fcmae/README.md "Your own
images")."""
import os
import os.path as osp
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmpretrain.registry import DATASETS
from PIL import Image

from mmcnx2.datasets import CLASSES, make_synthetic_world

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
IMAGE_FOLDER_CONFIG = osp.join(REPO, 'configs', 'fcmae',
                               'fcmae_convnextv2-base_64xb64-coslr-800e_image-folder.py')
DEMO = osp.join(REPO, 'configs', 'demo')
# (path, PIL format, (height, width)): nested folders, upper-case and unusual extensions.
IMAGES = [
    ('a.jpg', 'JPEG', (40, 64)),
    ('b.png', 'PNG', (72, 48)),
    ('scans/IMG_0003.JPG', 'JPEG', (64, 64)),
    ('scans/2024/day 2/c.jpeg', 'JPEG', (96, 80)),
    ('scans/2024/d.tif', 'TIFF', (50, 70)),
    ('site/e.bmp', 'BMP', (33, 65)),
    ('site/deep/er/f.webp', 'WEBP', (64, 96)),
    ('site/g.pgm', 'PPM', (48, 48)),
]
NOT_IMAGES = ['notes.txt', 'scans/labels.csv', '.cache/h.jpg', 'scans/._IMG_0003.JPG']


def write_image_folder(root, seed=0):
    rng = np.random.default_rng(seed)
    for path, fmt, (h, w) in IMAGES:
        full = osp.join(root, path)
        os.makedirs(osp.dirname(full), exist_ok=True)
        channels = () if path.endswith('.pgm') else (3, )
        Image.fromarray(rng.integers(0, 256, (h, w, *channels), dtype=np.uint8)).save(
            full, format=fmt)
    for path in NOT_IMAGES:
        os.makedirs(osp.dirname(osp.join(root, path)) or root, exist_ok=True)
        with open(osp.join(root, path), 'w') as f:
            f.write('not an image')
    return str(root)


def run(*cmd):
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout + proc.stderr


def test_every_image_at_any_depth_is_a_sample(tmp_path):
    import mmcnx2  # noqa: F401  (registers ImageFolderUnlabeled)
    root = write_image_folder(tmp_path)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        dataset = DATASETS.build(
            dict(type='ImageFolderUnlabeled', data_root=root,
                 pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
    assert [osp.relpath(d['img_path'], root) for d in dataset.load_data_list()] == \
        sorted(path for path, _, _ in IMAGES)
    shapes = {osp.relpath(dataset[i]['data_samples'].img_path, root):
              tuple(dataset[i]['inputs'].shape) for i in range(len(dataset))}
    assert shapes == {path: (3, h, w) for path, _, (h, w) in IMAGES}
    assert 'gt_label' not in dataset[0]['data_samples']


def test_a_folder_without_images_is_named(tmp_path):
    from mmcnx2.datasets import ImageFolderUnlabeled
    (tmp_path / 'notes.txt').write_text('x')
    with pytest.raises(FileNotFoundError, match=f'no image file under {tmp_path}.*1 other'):
        ImageFolderUnlabeled(data_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match='missing/ is not a folder'):
        ImageFolderUnlabeled(data_root=str(tmp_path / 'missing'))


def readme_config(marker, tmp_path, **values):
    """The config of configs/fcmae/README.md whose first line names ``marker``, with its
    ``_base_`` made absolute and the top-level ``values`` replaced."""
    with open(osp.join(REPO, 'configs', 'fcmae', 'README.md')) as f:
        blocks = re.findall(r'```python\n(.*?)```', f.read(), flags=re.S)
    text, = (textwrap.dedent(b) for b in blocks if marker in b.splitlines()[0])
    text = text.replace("_base_ = '../", f"_base_ = '{REPO}/configs/")
    for name, value in values.items():
        text, count = re.subn(rf'^{name} = .*$', f'{name} = {value!r}', text, flags=re.M)
        assert count == 1, name
    path = tmp_path / f'{marker}.py'
    path.write_text(text)
    return Config.fromfile(str(path))


@pytest.mark.parametrize('marker, layout, scope, classes', [
    ('mask-rcnn', 'coco', 'mmdet', CLASSES),
    ('upernet', 'ade', 'mmseg', ('background', *CLASSES)),
])
def test_readme_downstream_configs_read_the_domain_data(marker, layout, scope, classes,
                                                        tmp_path):
    from mmengine.registry import DATASETS as ROOT_DATASETS
    data_root = make_synthetic_world(str(tmp_path / 'world'), num_train=4, num_val=2,
                                     image_size=64, layouts=(layout, ))[layout]
    cfg = readme_config(f'{marker}_convnextv2-base', tmp_path, classes=classes,
                        data_root=data_root + '/')
    assert cfg.model.backbone.init_cfg.checkpoint == cfg.pretrained
    heads = ([cfg.model.roi_head.bbox_head, cfg.model.roi_head.mask_head] if layout == 'coco'
             else [cfg.model.decode_head, cfg.model.auxiliary_head])
    assert [head.num_classes for head in heads] == [len(classes)] * 2
    with DefaultScope.overwrite_default_scope(scope):
        for split, count in (('train', 4), ('val', 2)):
            dataset = ROOT_DATASETS.build(cfg[f'{split}_dataloader'].dataset)
            assert len(dataset) == count and dataset.metainfo['classes'] == classes
            sample = dataset[0]['data_samples']
            labels = (sample.gt_instances.labels if layout == 'coco' else
                      sample.gt_sem_seg.data.unique())
            assert 0 < len(labels) and labels.max() < len(classes)


@pytest.fixture(scope='module')
def fcmae_checkpoint(tmp_path_factory):
    """One epoch of the image-folder FCMAE config on 8 images, atto through the documented
    `--cfg-options` (the config is base)."""
    root = tmp_path_factory.mktemp('own')
    images = write_image_folder(root / 'images')
    work_dir = str(root / 'fcmae')
    log = run(sys.executable, 'tools/train.py', IMAGE_FOLDER_CONFIG, '--work-dir', work_dir,
              '--cfg-options', f'train_dataloader.dataset.data_root={images}',
              'model.backbone.arch=atto', 'model.neck.in_channels=320',
              'train_dataloader.batch_size=4', 'train_dataloader.num_workers=0',
              'train_dataloader.persistent_workers=False', 'train_cfg.max_epochs=1',
              'default_hooks.logger.interval=1')
    assert f'ImageFolderUnlabeled: 8 images under {images}/; skipped 3 other files' in log
    assert 'Epoch(train) [1][2/2]' in log  # 8 images, batch 4
    return osp.join(work_dir, 'epoch_1.pth')


@pytest.mark.slow
@pytest.mark.parametrize('config, layout', [
    ('upernet_convnextv2-atto_1xb4-150it_synthetic-96x96.py', 'ade'),
    ('mask-rcnn_convnextv2-atto_fpn_1xb4-150it_synthetic-96.py', 'coco'),
])
def test_downstream_training_starts_from_the_fcmae_checkpoint(config, layout,
                                                              fcmae_checkpoint, tmp_path):
    data_root = make_synthetic_world(str(tmp_path / 'world'), num_train=8, num_val=2,
                                     image_size=96, layouts=(layout, ))[layout]
    data = [f'{split}_dataloader.dataset.data_root={data_root}' for split in ('train', 'val')]
    if layout == 'coco':
        data.append(f'val_evaluator.ann_file={data_root}/annotations/instances_val2017.json')
    run(sys.executable, 'tools/train.py', osp.join(DEMO, config), '--work-dir',
        str(tmp_path / 'work'), '--cfg-options', f'pretrained={fcmae_checkpoint}',
        'train_cfg.max_iters=2', 'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False', *data)
    encoder = {k: v for k, v in torch.load(fcmae_checkpoint, weights_only=False)
               ['state_dict'].items() if k.startswith('backbone.')}
    trained = torch.load(tmp_path / 'work' / 'iter_2.pth', weights_only=False)['state_dict']
    assert len(encoder) == 136  # atto's encoder: everything but the output norms
    # Two small steps later the backbone is still the FCMAE encoder (a fresh init differs by
    # ~0.02 per weight).
    assert max((trained[k] - v).abs().max().item() for k, v in encoder.items()) < 1e-3
