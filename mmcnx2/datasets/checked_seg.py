# Copyright (c) mmcnx2 contributors. All rights reserved.
"""mmseg's datasets, with errors that name the image and label files (see
:mod:`.named_errors`)."""
from mmseg.datasets import ADE20KDataset, BaseSegDataset
from mmseg.registry import DATASETS

from .named_errors import NamedSampleErrors


@DATASETS.register_module()
class CheckedADE20KDataset(NamedSampleErrors, ADE20KDataset):
    """mmseg's ``ADE20KDataset`` (same arguments); an image or label map that cannot be read
    or decoded (e.g. a truncated PNG, read by Pillow) raises
    :class:`~mmcnx2.datasets.named_errors.SampleLoadError` naming both files."""


@DATASETS.register_module()
class CheckedBaseSegDataset(NamedSampleErrors, BaseSegDataset):
    """mmseg's ``BaseSegDataset`` (same arguments), errors named as
    :class:`CheckedADE20KDataset`'s."""
