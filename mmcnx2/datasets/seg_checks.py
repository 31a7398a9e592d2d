# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Checks of semantic-segmentation inputs, so a bad label map fails naming its file.

Without them an out-of-range label surfaces far from its cause (a CUDA device-side assert
or "Target 200 is out of bounds" inside the loss) and a label map of the wrong size is
silently cropped together with a different image region.
"""
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class CheckSegMap(BaseTransform):
    """Validate ``gt_seg_map`` right after mmseg's ``LoadAnnotations``.

    Place it directly after ``LoadAnnotations`` (before any resize, crop or flip): it
    compares the label map with the image as read from disk (``ori_shape``) and checks
    the label values as loaded, i.e. after ``reduce_zero_label`` and ``label_map``.

    Required keys: ``gt_seg_map`` (H, W) uint8, ``ori_shape`` (H, W), ``seg_map_path``,
    ``img_path``. Modified keys: none.

    Args:
        num_classes (int): Number of classes; valid labels are ``0 .. num_classes - 1``.
        ignore_index (int): The label that marks ignored pixels. Defaults to 255.

    Raises:
        ValueError: naming the label file, when the map is not a single-channel image of
            the same height and width as its image, or holds labels outside the valid
            range.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f'num_classes must be positive, got {num_classes}')
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        if 'gt_seg_map' not in results:
            return results  # inference (mmseg's inference_model drops LoadAnnotations)
        seg_map, seg_path = results['gt_seg_map'], results['seg_map_path']
        img_shape = tuple(results['ori_shape'][:2])
        if seg_map.ndim != 2 or seg_map.shape != img_shape:
            raise ValueError(
                f'Label map {seg_path} has shape {seg_map.shape} but its image '
                f'{results["img_path"]} is {img_shape[0]}x{img_shape[1]}: a label map '
                'must be a single-channel image of the same height and width.')
        labels = np.unique(seg_map)
        bad = labels[(labels >= self.num_classes) & (labels != self.ignore_index)]
        if bad.size:
            raise ValueError(
                f'Label map {seg_path} holds labels {self._as_stored(bad, results)} '
                f'outside the {self.num_classes} classes of the dataset: '
                f'{self._valid_range(results)} and the ignore index {self.ignore_index}.')
        return results

    def _as_stored(self, labels: np.ndarray, results: dict) -> str:
        """The bad labels as the user sees them in the file, where that is well defined."""
        if results.get('label_map'):
            return f'{labels.tolist()} (after label_map)'
        # reduce_zero_label subtracts 1 on load, so the file holds these values + 1.
        return str((labels.astype(int) + bool(results.get('reduce_zero_label'))).tolist())

    def _valid_range(self, results: dict) -> str:
        if results.get('reduce_zero_label') and not results.get('label_map'):
            return (f'valid values in the file are 1..{self.num_classes} '
                    '(0 is ignored: reduce_zero_label=True)')
        return f'valid labels are 0..{self.num_classes - 1}'

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index})')
