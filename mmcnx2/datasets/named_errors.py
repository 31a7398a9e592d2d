# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Data errors that name their file.

Image decoders fail without saying which file they were given: OpenCV on a zero-byte image
(``!buf.empty()``), Pillow on a truncated JPEG or label PNG (``image file is truncated``,
``cannot identify image file <_io.BytesIO ...>``). The datasets here run their pipeline
through :class:`NamingCompose`, which re-raises such an error as :class:`SampleLoadError`
naming the sample's files and the transform that failed. Use them as the dataset ``type``
in place of the upstream class of the same name without ``Checked``.
"""
import os.path as osp
from typing import Optional

from mmengine.dataset import Compose


class SampleLoadError(RuntimeError):
    """A transform failed on a sample; the message names the sample's files."""


class NamingCompose(Compose):
    """mmengine's ``Compose`` whose errors name the sample's files.

    An exception raised by a transform is re-raised as :class:`SampleLoadError` listing
    every ``*_path`` entry of the sample (``img_path``, ``seg_map_path``, ...; an empty file
    is marked as such) and the transform, unless its message already names one of them.
    """

    def __call__(self, data: dict) -> Optional[dict]:
        for transform in self.transforms:
            try:
                data = transform(data)
            except Exception as err:
                files = {k: v for k, v in data.items()
                         if k.endswith('_path') and isinstance(v, str)}
                if not files or any(path in str(err) for path in files.values()):
                    raise
                named = ', '.join(f'{key}={path}{_empty_mark(path)}'
                                  for key, path in files.items())
                raise SampleLoadError(
                    f'{named}: {type(transform).__name__} failed: {type(err).__name__}: '
                    f'{err}') from err
            if data is None:
                return None
        return data


def _empty_mark(path: str) -> str:
    return ' (an empty file)' if osp.isfile(path) and osp.getsize(path) == 0 else ''


class NamedSampleErrors:
    """Mixin for mmengine datasets: their pipeline runs as a :class:`NamingCompose`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = NamingCompose(self.pipeline.transforms)
