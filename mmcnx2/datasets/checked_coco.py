# Copyright (c) mmcnx2 contributors. All rights reserved.
"""COCO instances that are checked while loading, so bad data fails early and says where."""
import json
import logging
import math
import os.path as osp

from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmdet.registry import DATASETS
from mmengine.fileio import exists
from mmengine.logging import print_log

from .named_errors import NamedSampleErrors

# Top-level lists of a COCO instances file; pycocotools silently treats a missing one as empty.
COCO_KEYS = ('images', 'annotations', 'categories')


class CocoAnnotationError(ValueError):
    """A COCO annotation file, or an image it lists, is unusable."""


@DATASETS.register_module()
class CheckedCocoDataset(NamedSampleErrors, CocoDataset):
    """mmdet's ``CocoDataset`` that validates every image and annotation at load time.

    Same arguments as :class:`mmdet.datasets.CocoDataset`. Loading raises
    :class:`CocoAnnotationError` naming the annotation file (and the image file and the
    annotation id where one is at fault) when the json cannot be parsed, lacks one of
    ``images``, ``annotations``, ``categories``, none of its categories is among the
    config's ``classes``, no image is left after ``filter_cfg``, an image file is missing,
    a ``bbox`` is not 4 finite numbers with non-negative width and height, a
    ``category_id`` is not among the file's categories, or a ``segmentation`` is neither a
    list of polygons (even length, at least 3 points) nor an RLE dict of the image's size.
    Without it mmdet fails later ("need at least one array to concatenate", or inside a
    transform or pycocotools) without naming the file. Images that cannot be decoded are
    named by :class:`~mmcnx2.datasets.named_errors.NamingCompose`.
    """

    def load_data_list(self):
        try:
            data_list = super().load_data_list()
        except CocoAnnotationError:
            raise
        except (AssertionError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise CocoAnnotationError(
                f'{self.ann_file}: not a valid COCO annotation file '
                f'({type(e).__name__}: {e})') from e
        self._check_classes()
        return data_list

    def COCOAPI(self, path: str) -> COCO:  # noqa: N802 (mmdet's name; called as a class)
        """mmdet's COCO API on ``path``, refusing a file without the three top-level lists."""
        coco = COCO(path)
        missing = [key for key in COCO_KEYS if not isinstance(coco.dataset.get(key), list)]
        if missing:
            raise CocoAnnotationError(
                f'{self.ann_file}: not a COCO instances file: no list under '
                f'{", ".join(repr(k) for k in missing)} (top-level keys: '
                f'{sorted(coco.dataset)})')
        self._file_categories = [c.get('name') for c in coco.dataset['categories']]
        return coco

    def _check_classes(self) -> None:
        classes = list(self.metainfo['classes'])
        found = set(self._file_categories)
        if not self.cat_ids:
            raise CocoAnnotationError(
                f'{self.ann_file}: none of its categories {self._file_categories} is among '
                f"the config's classes {classes}; set metainfo=dict(classes=...) to the "
                "file's category names.")
        absent = [c for c in classes if c not in found]
        if absent:
            print_log(f"{self.ann_file} has no category {absent} of the config's classes: "
                      'those classes get no training data.', logger='current',
                      level=logging.WARNING)

    def filter_data(self):
        kept = super().filter_data()
        if self.data_list and not kept:
            raise CocoAnnotationError(
                f'{self.ann_file}: all {len(self.data_list)} images were filtered out '
                f'(filter_cfg={self.filter_cfg}): none has an annotation of the classes '
                f'{list(self.metainfo["classes"])} of a usable size.')
        return kept

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
