# Copyright (c) mmcnx2 contributors. All rights reserved.
from importlib.util import find_spec

from ..registry import register_on_first_use

if find_spec('mmseg') is not None:  # mmseg is optional
    from mmseg.registry import VISUALIZERS as MMSEG_VISUALIZERS

    # Imports mmseg.visualization: registered when mmseg's visualizer registry is first used.
    register_on_first_use(MMSEG_VISUALIZERS, f'{__name__}.seg_local_visualizer')
