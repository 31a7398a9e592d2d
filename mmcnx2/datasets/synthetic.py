# Copyright (c) mmcnx2 contributors. All rights reserved.
"""A built-in synthetic world: coloured, textured shapes on textured backgrounds.

Every stage of the chain trains on it without downloads. Scenes are drawn from a seed
(deterministic per image: image ``i`` of a split does not depend on how many are made) and
written in the layouts the real configs read:

- ``imagenet/{train,val}/<class>/*.JPEG`` + ``imagenet/meta/{train,val}.txt``
  ("<class>/<file> <label>" lines, mmpretrain ``ImageNet`` / ``CustomDataset``); one large
  object per image (the label) and sometimes a smaller distractor of another class.
- ``coco/{train2017,val2017}/*.jpg`` + ``coco/annotations/instances_{train,val}2017.json``
  (mmdet ``CocoDataset``): polygon segmentation, bbox, area, ``iscrowd=0`` per instance.
- ``ade/ADEChallengeData2016/{images,annotations}/{training,validation}/*.{jpg,png}``
  (mmseg ``ADE20KDataset``): label 0 is background (ignored with ``reduce_zero_label``),
  class ``k`` of :data:`CLASSES` is label ``k + 1``. Same scenes as the COCO split.

Objects never overlap, so each polygon is exactly the visible instance and the semantic
map is the union of the instance masks. Use ``metainfo=dict(classes=CLASSES)`` in configs.
"""
import json
import os
import os.path as osp
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ('circle', 'square', 'triangle', 'star', 'cross')
# Base colour per class; every instance jitters it, and each class has its own texture.
PALETTE = ((220, 50, 40), (40, 90, 220), (40, 170, 60), (235, 200, 30), (170, 50, 200))
LAYOUTS = ('imagenet', 'coco', 'ade')
SPLITS = ('train', 'val')
ADE_SPLIT = {'train': 'training', 'val': 'validation'}

# Streams of the seed sequence, so layouts and splits draw independent scenes.
_STREAM = {('imagenet', 'train'): 0, ('imagenet', 'val'): 1, ('scene', 'train'): 2,
           ('scene', 'val'): 3}


def _shape_polygon(cls: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """Vertices (P, 2) in pixel (x, y) of shape ``CLASSES[cls]`` inside the circle of
    radius ``r`` around (cx, cy), rotated by ``angle`` radians."""
    name = CLASSES[cls]
    if name == 'circle':
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif name in ('square', 'triangle'):
        n = 4 if name == 'square' else 3
        t = np.arange(n) * 2 * np.pi / n
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif name == 'star':
        t = np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([np.cos(t), np.sin(t)], 1) * rad[:, None]
    else:  # cross: a plus sign with arms of half-width w
        w = 0.35
        pts = np.array([[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1],
                        [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w]]) / np.hypot(1, w)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return pts @ rot.T * r + np.array([cx, cy])


def _texture(rng: np.random.Generator, cls: int, size: int) -> np.ndarray:
    """(size, size, 3) float texture of class ``cls``: jittered base colour modulated by
    the class pattern (solid, stripes, checker, dots, diagonal stripes)."""
    colour = np.clip(np.array(PALETTE[cls], float) + rng.normal(0, 12, 3), 0, 255)
    period = int(rng.integers(3, 6))
    yy, xx = np.mgrid[:size, :size] + rng.integers(0, period, 2)[:, None, None]
    name = CLASSES[cls]
    if name == 'circle':
        pattern = np.ones((size, size))
    elif name == 'square':
        pattern = 0.55 + 0.45 * ((yy // period) % 2)
    elif name == 'triangle':
        pattern = 0.55 + 0.45 * ((yy // period + xx // period) % 2)
    elif name == 'star':  # bright dots
        dist = np.hypot(yy % (2 * period) - period, xx % (2 * period) - period)
        pattern = 1.0 + 0.6 * (dist < period / 2)
    else:
        pattern = 0.55 + 0.45 * (((xx + yy) // period) % 2)
    return np.clip(colour * pattern[..., None], 0, 255)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) float, low-saturation smooth noise plus waves and grain."""
    coarse = rng.uniform(60, 190, (4, 4, 3))
    coarse = 0.75 * coarse.mean(-1, keepdims=True) + 0.25 * coarse  # mostly grey
    bg = np.asarray(
        Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.BICUBIC), float)
    yy, xx = np.mgrid[:size, :size]
    theta, freq = rng.uniform(0, np.pi), rng.uniform(0.2, 0.6)
    bg = bg + 12 * np.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta)))[..., None]
    return bg + rng.normal(0, 6, (size, size, 3))


def _draw_scene(rng: np.random.Generator, size: int,
                objects: Sequence[Tuple[int, float]]) -> Tuple[np.ndarray, List[dict]]:
    """Draw ``objects`` ((class, radius in px) each, biggest first) without overlap.

    Returns:
        tuple: uint8 image (size, size, 3) and a list of instances, each a dict with
        ``cls``, ``polygon`` (P, 2) and boolean ``mask`` (size, size). An object that finds
        no free place in 50 tries is left out.
    """
    img = _background(rng, size)
    instances, boxes = [], []
    for cls, r in objects:
        for _ in range(50):
            cx, cy = rng.uniform(r + 1, size - r - 1, 2)
            poly = _shape_polygon(cls, cx, cy, r, rng.uniform(0, 2 * np.pi))
            box = np.concatenate([poly.min(0) - 2, poly.max(0) + 2])
            if all(box[0] > b[2] or box[2] < b[0] or box[1] > b[3] or box[3] < b[1]
                   for b in boxes):
                break
        else:
            continue
        boxes.append(box)
        canvas = Image.new('L', (size, size))
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in poly], fill=1)
        mask = np.asarray(canvas, bool)
        img[mask] = _texture(rng, cls, size)[mask]
        instances.append(dict(cls=cls, polygon=poly, mask=mask))
    return np.clip(img, 0, 255).astype(np.uint8), instances


def _rng(seed: int, stream: Tuple[str, str], index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAM[stream], index])


def _write_imagenet(root: str, split: str, num: int, size: int, seed: int) -> None:
    """One dominant object per image; classes cycle so every class is balanced."""
    lines = []
    for i in range(num):
        rng = _rng(seed, ('imagenet', split), i)
        label = i % len(CLASSES)
        objects = [(label, rng.uniform(0.28, 0.40) * size)]
        if rng.random() < 0.5:  # a smaller distractor of another class
            other = (label + int(rng.integers(1, len(CLASSES)))) % len(CLASSES)
            objects.append((other, rng.uniform(0.10, 0.15) * size))
        img, _ = _draw_scene(rng, size, objects)
        rel = f'{CLASSES[label]}/{split}_{i:06d}.JPEG'
        os.makedirs(osp.join(root, split, CLASSES[label]), exist_ok=True)
        Image.fromarray(img).save(osp.join(root, split, rel), quality=95)
        lines.append(f'{rel} {label}\n')
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
        f.writelines(lines)


def _coco_annotation(inst: dict, ann_id: int, img_id: int) -> dict:
    poly = inst['polygon']
    x0, y0 = poly.min(0)
    x1, y1 = poly.max(0)
    x, y = poly[:, 0], poly[:, 1]
    area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))  # shoelace
    return dict(id=ann_id, image_id=img_id, category_id=inst['cls'] + 1,
                bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                area=round(float(area), 2), iscrowd=0,
                segmentation=[[round(float(v), 2) for v in poly.reshape(-1)]])


def _write_scenes(coco_root: str, ade_root: str, split: str, num: int, size: int,
                  seed: int) -> None:
    """Multi-object scenes, written as COCO instances and/or ADE20K label maps."""
    images, annotations = [], []
    for i in range(num):
        rng = _rng(seed, ('scene', split), i)
        count = int(rng.integers(1, 5))
        objects = [(int(rng.integers(len(CLASSES))), rng.uniform(0.10, 0.22) * size)
                   for _ in range(count)]
        objects.sort(key=lambda o: -o[1])  # place big ones while there is room
        img, instances = _draw_scene(rng, size, objects)
        if coco_root:
            name = f'{i + 1:012d}.jpg'
            Image.fromarray(img).save(osp.join(coco_root, f'{split}2017', name), quality=95)
            images.append(dict(id=i + 1, file_name=name, width=size, height=size))
            annotations += [
                _coco_annotation(inst, len(annotations) + k + 1, i + 1)
                for k, inst in enumerate(instances)
            ]
        if ade_root:
            name = f'ADE_{split}_{i + 1:08d}'
            Image.fromarray(img).save(
                osp.join(ade_root, 'images', ADE_SPLIT[split], name + '.jpg'), quality=95)
            label = np.zeros((size, size), np.uint8)  # 0 = background
            for inst in instances:
                label[inst['mask']] = inst['cls'] + 1
            Image.fromarray(label).save(
                osp.join(ade_root, 'annotations', ADE_SPLIT[split], name + '.png'))
    if coco_root:
        categories = [dict(id=k + 1, name=c, supercategory='shape')
                      for k, c in enumerate(CLASSES)]
        with open(osp.join(coco_root, 'annotations', f'instances_{split}2017.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)


def make_synthetic_world(root: str,
                         num_train: int = 200,
                         num_val: int = 50,
                         image_size: int = 128,
                         seed: int = 0,
                         layouts: Sequence[str] = LAYOUTS) -> Dict[str, object]:
    """Write the synthetic world under ``root``.

    Args:
        root (str): Output folder (created; existing files of the same names are replaced).
        num_train (int): Images per layout in the train split. Defaults to 200.
        num_val (int): Images per layout in the val split. Defaults to 50.
        image_size (int): Side of the square images in pixels. Defaults to 128.
        seed (int): Seed; the same seed gives byte-identical files. Defaults to 0.
        layouts (Sequence[str]): Any of ``'imagenet'``, ``'coco'``, ``'ade'``.

    Returns:
        dict: ``classes`` (:data:`CLASSES`), ``palette`` (:data:`PALETTE`) and the data
        root of each written layout: ``imagenet`` (``ROOT/imagenet``), ``coco``
        (``ROOT/coco``), ``ade`` (``ROOT/ade/ADEChallengeData2016``).
    """
    unknown = set(layouts) - set(LAYOUTS)
    if unknown:
        raise ValueError(f'Unknown layouts {sorted(unknown)}; valid layouts are {LAYOUTS}')
    if image_size < 32:
        raise ValueError(f'image_size must be at least 32 pixels, got {image_size}')
    out = dict(classes=CLASSES, palette=PALETTE)
    if 'imagenet' in layouts:
        out['imagenet'] = osp.join(root, 'imagenet')
    if 'coco' in layouts:
        out['coco'] = osp.join(root, 'coco')
        for sub in ('train2017', 'val2017', 'annotations'):
            os.makedirs(osp.join(out['coco'], sub), exist_ok=True)
    if 'ade' in layouts:
        out['ade'] = osp.join(root, 'ade', 'ADEChallengeData2016')
        for kind in ('images', 'annotations'):
            for split in ADE_SPLIT.values():
                os.makedirs(osp.join(out['ade'], kind, split), exist_ok=True)
    for split, num in zip(SPLITS, (num_train, num_val)):
        if 'imagenet' in out:
            _write_imagenet(out['imagenet'], split, num, image_size, seed)
        if 'coco' in out or 'ade' in out:
            _write_scenes(out.get('coco'), out.get('ade'), split, num, image_size, seed)
    return out
