# Copyright (c) mmcnx2 contributors. All rights reserved.
"""What ``init_cfg=dict(type='Pretrained', ...)`` of a ConvNeXtV2 runs: weights of any format,
from a path, an http(s) URL or a model name (see :mod:`mmcnx2.converters.loading`)."""
from typing import Optional

import torch.nn as nn
from mmengine.logging import MMLogger

from ...converters.loading import (OPTIONAL_KEY, OWN_FORMAT, load_converted_state_dict,
                                  load_fitting)


def load_pretrained_backbone(backbone: nn.Module,
                             checkpoint: str,
                             prefix: Optional[str] = None,
                             map_location: str = 'cpu') -> str:
    """Load a checkpoint of any known format into ``backbone``, refusing anything that does
    not fit. This is what ``init_cfg=dict(type='Pretrained', ...)`` of a ConvNeXtV2 runs.

    Args:
        backbone (nn.Module): The module to fill.
        checkpoint (str): A path, an http(s) URL (downloaded once, see
            :func:`mmcnx2.converters.loading.download_checkpoint`), a model name of
            :func:`mmcnx2.apis.list_models`,
            or another mmengine checkpoint scheme.
        prefix (str, optional): For checkpoints in mmcnx2's layout: only keys under this
            prefix are used, with it stripped (e.g. ``'backbone.'`` for a classifier, detector
            or FCMAE checkpoint). Converted foreign checkpoints always provide ``backbone.*``.
        map_location (str): Device for mmengine's other checkpoint schemes.

    Returns:
        str: The detected format of the checkpoint.

    Raises:
        KeyError: no key carries ``prefix``.
        RuntimeError: listing missing, unexpected and mis-shaped keys (output norms
            ``norm{i}`` may be missing or extra).
    """
    fmt, state_dict = load_converted_state_dict(checkpoint, map_location)
    if fmt != OWN_FORMAT:
        prefix = 'backbone.'
    if prefix:
        stripped = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not stripped:
            raise KeyError(f'No key in {checkpoint} starts with prefix {prefix!r}; '
                           f'first keys: {list(state_dict)[:5]}')
        state_dict = stripped

    optional = lambda key: bool(OPTIONAL_KEY.match(key))  # noqa: E731
    loaded, skipped = load_fitting(
        backbone, state_dict,
        f'Checkpoint {checkpoint} ({fmt} layout, prefix {prefix!r}) does not fit '
        f'{type(backbone).__name__}', optional, optional)
    converted = '' if fmt == OWN_FORMAT else f' ({fmt} layout, converted)'
    MMLogger.get_current_instance().info(
        f'Loaded {loaded} tensors into {type(backbone).__name__} from {checkpoint}'
        f'{converted}' + (f'; kept initial values of {skipped}' if skipped else ''))
    return fmt
