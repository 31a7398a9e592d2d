# Copyright (c) mmcnx2 contributors. All rights reserved.
"""mmpretrain's image datasets, with errors that name the image (see :mod:`.named_errors`)."""
from mmpretrain.datasets import CustomDataset, ImageNet
from mmpretrain.registry import DATASETS

from .named_errors import NamedSampleErrors


@DATASETS.register_module()
class CheckedImageNet(NamedSampleErrors, ImageNet):
    """mmpretrain's ``ImageNet`` (same arguments); an image that cannot be read or decoded
    raises :class:`~mmcnx2.datasets.named_errors.SampleLoadError` naming it."""


@DATASETS.register_module()
class CheckedCustomDataset(NamedSampleErrors, CustomDataset):
    """mmpretrain's ``CustomDataset`` (same arguments); an image that cannot be read or
    decoded raises :class:`~mmcnx2.datasets.named_errors.SampleLoadError` naming it."""
