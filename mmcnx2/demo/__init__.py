# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Reporting helpers of the main job, ``tools/run_demo.py``: logged scalars, loss curves,
the summary table (``report``) and drawn predictions (``predict``, needs mmdet/mmseg)."""
