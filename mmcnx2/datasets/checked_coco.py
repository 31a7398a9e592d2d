# Copyright (c) mmcnx2 contributors. All rights reserved.
"""COCO instances that are checked while loading, so bad data fails early and says where."""
import json
import math
import os.path as osp

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from mmengine.fileio import exists


class CocoAnnotationError(ValueError):
    """A COCO annotation file, or an image it lists, is unusable."""


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """mmdet's ``CocoDataset`` that validates every image and annotation at load time.

    Same arguments as :class:`mmdet.datasets.CocoDataset`. Loading raises
    :class:`CocoAnnotationError` naming the annotation file, the image file and the
    annotation id when the json cannot be parsed, an image file is missing, a ``bbox`` is
    not 4 finite numbers with non-negative width and height, a ``category_id`` is not
    among the file's categories, or a ``segmentation`` is neither a list of polygons (even
    length, at least 3 points) nor an RLE dict of the image's size. Without it mmdet fails
    later, inside a transform or pycocotools, without naming the file.
    """

    def load_data_list(self):
        try:
            return super().load_data_list()
        except CocoAnnotationError:
            raise
        except (AssertionError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise CocoAnnotationError(
                f'{self.ann_file}: not a valid COCO annotation file '
                f'({type(e).__name__}: {e})') from e

    def parse_data_info(self, raw_data_info: dict):
        img_info = raw_data_info['raw_img_info']
        img_path = osp.join(self.data_prefix['img'], img_info['file_name'])
        where = f'{self.ann_file}: image {img_path} (id {img_info["img_id"]})'
        if not exists(img_path, backend_args=self.backend_args):
            raise CocoAnnotationError(f'{where}: the image file does not exist')
        for ann in raw_data_info['raw_ann_info']:
            problem = self._annotation_problem(ann, img_info)
            if problem:
                raise CocoAnnotationError(f'{where}, annotation {ann.get("id")}: {problem}')
        return super().parse_data_info(raw_data_info)

    def _annotation_problem(self, ann: dict, img_info: dict) -> str:
        """What is wrong with one annotation, or '' when it is usable."""
        bbox = ann.get('bbox')
        if not (_numbers(bbox) and len(bbox) == 4 and bbox[2] >= 0 and bbox[3] >= 0):
            return f'bbox must be [x, y, w, h], 4 finite numbers with w, h >= 0; got {bbox!r}'
        if ann.get('category_id') not in self.coco.cats:
            return (f'category_id {ann.get("category_id")!r} is not among the categories '
                    f'{sorted(self.coco.cats)}')
        seg = ann.get('segmentation')
        if seg is None or seg == []:
            return ''
        if isinstance(seg, list):
            for poly in seg:
                if not (_numbers(poly) and len(poly) >= 6 and len(poly) % 2 == 0):
                    return ('each segmentation polygon must be a flat list of an even number '
                            f'(>= 6) of finite coordinates; got {poly!r}')
            return ''
        size = [img_info['height'], img_info['width']]
        if not (isinstance(seg, dict) and 'counts' in seg and list(seg.get('size', [])) == size):
            return (f'segmentation must be polygons or an RLE dict with "counts" and "size" '
                    f'{size}; got {str(seg)[:80]}')
        return ''


def _numbers(values) -> bool:
    return isinstance(values, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        for v in values)
