# Copyright (c) mmcnx2 contributors. All rights reserved.
import numpy as np
from mmseg.registry import VISUALIZERS
from mmseg.visualization import SegLocalVisualizer


@VISUALIZERS.register_module()
class ContiguousSegLocalVisualizer(SegLocalVisualizer):
    """mmseg's ``SegLocalVisualizer`` for images in any memory layout (the UperNet configs').

    mmseg 1.2.2 writes the class names with OpenCV into an array laid out like the image
    (``np.zeros_like``), and OpenCV cannot draw into an array that is not C-contiguous:
    mmseg's own ``tools/analysis_tools/browse_dataset.py`` passes a channel-reversed view of
    the (C, H, W) input and fails with "Layout of the output array img is incompatible with
    cv::Mat" with every OpenCV version (open-mmlab/mmsegmentation#3405). This one copies such
    an image into C order first. Same arguments as ``SegLocalVisualizer``.
    """

    def add_datasample(self, name: str, image: np.ndarray, *args, **kwargs) -> None:
        super().add_datasample(name, np.ascontiguousarray(image), *args, **kwargs)
