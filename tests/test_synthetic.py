# Copyright (c) mmcnx2 contributors. All rights reserved.
"""The synthetic world: deterministic, and readable by the real mmpretrain/mmdet/mmseg datasets."""
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mmcnx2.datasets import CLASSES, PALETTE, make_synthetic_world

NUM_TRAIN, NUM_VAL, SIZE = 20, 10, 64


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    return make_synthetic_world(str(tmp_path_factory.mktemp('world')), NUM_TRAIN, NUM_VAL,
                                SIZE, seed=0)


def _files(root):
    """{relative path: bytes} of every file under root."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = osp.join(folder, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = f.read()
    return out


def test_same_seed_same_bytes_other_seed_other_images(world, tmp_path):
    root = osp.dirname(world['imagenet'])
    again = make_synthetic_world(str(tmp_path / 'a'), NUM_TRAIN, NUM_VAL, SIZE, seed=0)
    assert _files(osp.dirname(again['imagenet'])) == _files(root)

    # image i does not depend on how many images are made
    fewer = make_synthetic_world(str(tmp_path / 'b'), 5, 0, SIZE, seed=0, layouts=['coco'])
    name = 'train2017/000000000003.jpg'
    assert _files(fewer['coco'])[name] == _files(world['coco'])[name]

    other = make_synthetic_world(str(tmp_path / 'c'), NUM_TRAIN, NUM_VAL, SIZE, seed=1)
    same, theirs = _files(root), _files(osp.dirname(other['imagenet']))
    assert same.keys() == theirs.keys()
    images = [k for k in same if k.endswith(('.jpg', '.JPEG'))]
    assert sum(same[k] != theirs[k] for k in images) == len(images)


def test_imagenet_layout(world):
    from mmpretrain.datasets import CustomDataset, ImageNet
    for split, num in (('train', NUM_TRAIN), ('val', NUM_VAL)):
        dataset = ImageNet(world['imagenet'], split=split, metainfo=dict(classes=CLASSES))
        assert len(dataset) == num
        labels = [dataset.get_data_info(i)['gt_label'] for i in range(num)]
        folders = [osp.basename(osp.dirname(dataset.get_data_info(i)['img_path']))
                   for i in range(num)]
        assert [CLASSES[label] for label in labels] == folders
        assert np.bincount(labels).tolist() == [num // len(CLASSES)] * len(CLASSES)
    # without the meta files, classes come from the folder names
    dataset = CustomDataset(world['imagenet'], data_prefix='train')
    assert len(dataset) == NUM_TRAIN and sorted(dataset.CLASSES) == sorted(CLASSES)


def test_coco_layout_masks_match_boxes(world):
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations
    with open(osp.join(world['coco'], 'annotations', 'instances_train2017.json')) as f:
        raw = json.load(f)
    assert [c['name'] for c in raw['categories']] == list(CLASSES)
    assert all(a['iscrowd'] == 0 and a['area'] > 0 for a in raw['annotations'])

    dataset = CocoDataset(
        data_root=world['coco'], ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'), metainfo=dict(classes=CLASSES),
        filter_cfg=dict(filter_empty_gt=False), pipeline=[])
    assert len(dataset) == NUM_TRAIN
    load = LoadAnnotations(with_bbox=True, with_mask=True)
    num_instances = 0
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        shape = (info['height'], info['width'])
        results = load(dict(info, ori_shape=shape, img_shape=shape))
        masks, boxes = results['gt_masks'].masks, results['gt_bboxes'].numpy()
        assert len(masks) == len(boxes) >= 1
        for mask, box in zip(masks, boxes):
            ys, xs = np.nonzero(mask)
            mask_box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            assert np.abs(mask_box - box).max() <= 1.5
        num_instances += len(boxes)
    assert num_instances == len(raw['annotations'])
    assert sorted({a['category_id'] for a in raw['annotations']}) == [1, 2, 3, 4, 5]


def test_ade_layout_is_the_union_of_coco_masks(world):
    from mmdet.datasets import CocoDataset
    from mmdet.datasets.transforms import LoadAnnotations
    from mmseg.datasets import BaseSegDataset
    from mmseg.datasets.transforms import LoadAnnotations as LoadSegAnnotations

    # mmseg's ADE20KDataset only accepts subsets of the 150 ADE classes; BaseSegDataset with
    # ADE's conventions (.jpg/.png, reduce_zero_label) reads the same layout with our classes.
    seg = BaseSegDataset(
        data_root=world['ade'], img_suffix='.jpg', seg_map_suffix='.png',
        reduce_zero_label=True,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        metainfo=dict(classes=CLASSES, palette=PALETTE), pipeline=[])
    assert len(seg) == NUM_VAL
    coco = CocoDataset(
        data_root=world['coco'], ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'), metainfo=dict(classes=CLASSES),
        filter_cfg=dict(filter_empty_gt=False), pipeline=[])
    load_seg = LoadSegAnnotations()  # reduce_zero_label comes from the dataset
    load_inst = LoadAnnotations(with_bbox=True, with_label=True, with_mask=True)
    agreement = []
    for i in range(NUM_VAL):
        seg_info, inst_info = seg.get_data_info(i), coco.get_data_info(i)
        assert np.array_equal(np.asarray(Image.open(seg_info['img_path'])),
                              np.asarray(Image.open(inst_info['img_path'])))
        label = load_seg(dict(seg_info, seg_fields=[]))['gt_seg_map']
        assert set(np.unique(label)) <= set(range(len(CLASSES))) | {255}
        inst = load_inst(dict(inst_info, ori_shape=(SIZE, SIZE), img_shape=(SIZE, SIZE)))
        expected = np.full((SIZE, SIZE), 255)  # background is ignored
        for mask, cls in zip(inst['gt_masks'].masks, inst['gt_bboxes_labels']):
            expected[mask.astype(bool)] = cls
        agreement.append((label == expected).mean())
    # the two polygon rasterisers (PIL, pycocotools) differ only on boundary pixels
    assert min(agreement) > 0.97, agreement


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match='pascal'):
        make_synthetic_world(str(tmp_path), 2, 2, layouts=['pascal'])
    with pytest.raises(ValueError, match='image_size'):
        make_synthetic_world(str(tmp_path), 2, 2, image_size=8)


@pytest.mark.slow
def test_command_line(tmp_path):
    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    proc = subprocess.run(
        [sys.executable, 'tools/dataset_converters/make_synthetic.py', str(tmp_path),
         '--num-train', '5', '--num-val', '0', '--image-size', '32', '--layouts', 'imagenet'],
        cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)['imagenet'] == str(tmp_path / 'imagenet')
    with open(tmp_path / 'imagenet' / 'meta' / 'train.txt') as f:
        assert [line.split()[1] for line in f] == ['0', '1', '2', '3', '4']
    assert not (tmp_path / 'coco').exists()
