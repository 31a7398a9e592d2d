# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Importing this module installs mmcnx2's safe checkpoint loading for mmengine.

The configs list it in ``custom_imports`` so that every launcher (tools/train.py, ``mim
train``, mmdet's/mmseg's own ``train.py`` and ``test.py``, ``init_detector``, ...) loads
``load_from``, ``resume`` and ``Pretrained`` checkpoints through
:func:`mmcnx2.engine.checkpoint.load_local_checkpoint`::

    custom_imports = dict(
        imports=['mmcnx2', 'mmcnx2.engine.safe_checkpoint_loading'], allow_failed_imports=False)

Importing :mod:`mmcnx2` alone does not change mmengine's loader. See
:func:`mmcnx2.engine.checkpoint.install_safe_checkpoint_loading` for what changes.
"""
from .checkpoint import install_safe_checkpoint_loading

install_safe_checkpoint_loading()
