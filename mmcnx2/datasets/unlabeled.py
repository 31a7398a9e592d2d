# Copyright (c) mmcnx2 contributors. All rights reserved.
"""A folder of images without labels: the data of self-supervised (FCMAE) pretraining."""
from typing import List, Sequence

from mmengine.dataset import BaseDataset
from mmengine.fileio import get_file_backend
from mmengine.logging import print_log
from mmpretrain.registry import DATASETS

#: The image formats ``mmcv.imread`` reads with its default OpenCV backend (opencv-python).
IMAGE_EXTENSIONS = ('.bmp', '.dib', '.jpeg', '.jpg', '.jpe', '.jp2', '.png', '.webp', '.pbm',
                    '.pgm', '.ppm', '.pxm', '.pnm', '.sr', '.ras', '.tiff', '.tif', '.hdr',
                    '.pic')


@DATASETS.register_module()
class ImageFolderUnlabeled(BaseDataset):
    """Every image file below a folder, at any depth, as one unlabeled sample.

    No annotation file and no class folders: the layout of the folder carries no meaning.
    A file is an image when its name ends with one of ``extensions`` (any case, so
    ``IMG_0001.JPG`` counts); other files, and files or folders whose name starts with
    ``.`` (``.DS_Store``, macOS ``._x.jpg``, ``.ipynb_checkpoints/``), are skipped; the log
    counts the skipped non-image files. Samples are ``dict(img_path=...)`` in sorted path
    order, so mmpretrain's ``LoadImageFromFile`` ... ``PackInputs`` pipelines apply unchanged.

    Args:
        data_root (str): The folder (local, or any mmengine file backend that can list).
        extensions (Sequence[str]): The file name endings taken as images, compared without
            case. Defaults to :data:`IMAGE_EXTENSIONS`.
        **kwargs: The other arguments of :class:`mmengine.dataset.BaseDataset`:
            ``pipeline``, ``data_prefix=dict(img_path='sub/folder')`` (searched instead of
            ``data_root``), ``indices``, ``lazy_init``, ``serialize_data``...

    Raises:
        FileNotFoundError: naming the folder, when it does not exist or holds no image.
    """

    def __init__(self, data_root: str, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 **kwargs) -> None:
        self.extensions = tuple(ext.lower() for ext in extensions)
        super().__init__(data_root=data_root, **kwargs)

    def load_data_list(self) -> List[dict]:
        folder = self.data_prefix.get('img_path') or self.data_root
        backend = get_file_backend(folder, enable_singleton=True)
        if hasattr(backend, 'isdir') and not backend.isdir(folder):
            raise FileNotFoundError(f'ImageFolderUnlabeled: {folder} is not a folder')
        images, skipped = [], []
        for path in sorted(backend.list_dir_or_file(folder, list_dir=False, recursive=True)):
            hidden = any(part.startswith('.') for part in path.replace('\\', '/').split('/'))
            if not hidden and path.lower().endswith(self.extensions):
                images.append(dict(img_path=backend.join_path(folder, path)))
            else:
                skipped.append(path)
        if not images:
            raise FileNotFoundError(
                f'ImageFolderUnlabeled: no image file under {folder} (searched at any depth '
                f'for {", ".join(self.extensions)}; {len(skipped)} other files)')
        print_log(
            f'ImageFolderUnlabeled: {len(images)} images under {folder}'
            + (f'; skipped {len(skipped)} other files, e.g. {skipped[:3]}' if skipped else ''),
            logger='current')
        return images
