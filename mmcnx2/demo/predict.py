# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Draw a trained detector's / segmentor's predictions on images with mmdet's / mmseg's
own inference APIs and visualizers, one row of images per PNG."""
from typing import List, Optional

import mmcv
import numpy as np
import torch
from mmengine.structures import PixelData
from PIL import Image


def _save_row(images: List[np.ndarray], out_file: str, min_height: int = 256) -> None:
    """Save RGB images side by side (padded to the tallest) as one PNG, enlarged by an
    integer factor (nearest neighbour) to at least ``min_height`` so labels stay legible."""
    height = max(img.shape[0] for img in images)
    padded = [np.pad(img, ((0, height - img.shape[0]), (0, 4), (0, 0)), constant_values=255)
              for img in images]
    row = np.concatenate(padded, axis=1)
    scale = -(-min_height // height)  # ceil
    row = row.repeat(scale, axis=0).repeat(scale, axis=1)
    Image.fromarray(row).save(out_file)


def draw_detections(config: str, checkpoint: str, images: List[str], out_file: str,
                    score_thr: float = 0.3) -> None:
    """Instance predictions (boxes, masks, labels) with score >= ``score_thr``.

    Args:
        config: mmdet-scope config the checkpoint was trained with.
        checkpoint: its checkpoint (class names are read from its ``dataset_meta``).
        images: image files to predict on.
        out_file: PNG with one drawn image per input, left to right.
        score_thr: lowest score drawn.
    """
    # mmdet and mmseg are imported where used: mmcnx2 works without them.
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS

    model = init_detector(config, checkpoint, device='cpu')
    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.dataset_meta = model.dataset_meta
    drawn = []
    for path in images:
        image = mmcv.imread(path, channel_order='rgb')
        visualizer.add_datasample(
            'prediction', image, data_sample=inference_detector(model, path),
            draw_gt=False, pred_score_thr=score_thr)
        drawn.append(visualizer.get_image())
    _save_row(drawn, out_file)


def draw_segmentations(config: str, checkpoint: str, images: List[str], out_file: str,
                       labels: Optional[List[str]] = None) -> None:
    """Semantic predictions, each next to its ground truth when ``labels`` is given.

    Args:
        config: mmseg-scope config the checkpoint was trained with.
        checkpoint: its checkpoint (classes and palette come from its ``dataset_meta``).
        images: image files to predict on.
        out_file: PNG with the drawn inputs left to right, each as a (ground truth,
            prediction) pair when ``labels`` is given.
        labels: label PNGs of ``images`` (same order), in the dataset's own class ids,
            i.e. after the config's ``reduce_zero_label`` if it sets one.
    """
    from mmseg.apis import inference_model, init_model
    from mmseg.registry import VISUALIZERS

    model = init_model(config, checkpoint, device='cpu')
    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.dataset_meta = model.dataset_meta
    drawn = []
    for i, path in enumerate(images):
        image = mmcv.imread(path, channel_order='rgb')
        result = inference_model(model, path)
        if labels is not None:
            gt = mmcv.imread(labels[i], flag='unchanged')
            result.gt_sem_seg = PixelData(data=torch.from_numpy(gt.astype(np.int64))[None])
        # one panel per call: the visualizer's canvas holds the last map it drew
        for draw_gt in ([True, False] if labels is not None else [False]):
            visualizer.add_datasample(
                'prediction', image, data_sample=result, draw_gt=draw_gt,
                draw_pred=not draw_gt, with_labels=False)
            drawn.append(visualizer.get_image())
    _save_row(drawn, out_file)
