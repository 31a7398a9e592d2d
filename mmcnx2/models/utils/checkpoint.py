# Copyright (c) mmcnx2 contributors. All rights reserved.
import re
from typing import Optional

import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import _load_checkpoint

# Output norms exist only for the stages a model returns, so they may be absent on either side
# (an FCMAE encoder has none; a detector has four).
OPTIONAL_KEY = re.compile(r'norm\d+\.')


def load_pretrained_backbone(backbone: nn.Module,
                             checkpoint: str,
                             prefix: Optional[str] = None,
                             map_location: str = 'cpu') -> None:
    """Load a checkpoint into ``backbone``, refusing anything that does not fit.

    Args:
        backbone (nn.Module): The module to fill.
        checkpoint (str): Path or URL understood by mmengine's checkpoint loaders.
        prefix (str, optional): Only keys under this prefix are used, with it stripped
            (e.g. ``'backbone.'`` for a classifier, detector or FCMAE checkpoint).
        map_location (str): Device to load tensors on.

    Raises:
        KeyError: no key carries ``prefix``.
        RuntimeError: listing missing, unexpected and mis-shaped keys (output norms
            ``norm{i}`` may be missing or extra).
    """
    loaded = _load_checkpoint(checkpoint, map_location=map_location, logger='current')
    state_dict = loaded.get('state_dict', loaded) if isinstance(loaded, dict) else loaded
    if prefix:
        stripped = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not stripped:
            raise KeyError(f'No key in {checkpoint} starts with prefix {prefix!r}; '
                           f'first keys: {list(state_dict)[:5]}')
        state_dict = stripped

    own = backbone.state_dict()
    missing = [k for k in own if k not in state_dict and not OPTIONAL_KEY.match(k)]
    unexpected = [k for k in state_dict if k not in own and not OPTIONAL_KEY.match(k)]
    mis_shaped = [
        f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
        for k, v in state_dict.items() if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or mis_shaped:
        raise RuntimeError(
            f'Checkpoint {checkpoint} (prefix {prefix!r}) does not fit '
            f'{type(backbone).__name__}:\n'
            f'  missing keys ({len(missing)}): {missing}\n'
            f'  unexpected keys ({len(unexpected)}): {unexpected}\n'
            f'  mis-shaped keys ({len(mis_shaped)}): {mis_shaped}\n'
            'Foreign checkpoints (official, timm, HF) need '
            'tools/model_converters/convnextv2_to_mmcnx2.py first.')
    usable = {k: v for k, v in state_dict.items() if k in own}
    backbone.load_state_dict(usable, strict=False)
    skipped = sorted(set(own) - set(usable))
    MMLogger.get_current_instance().info(
        f'Loaded {len(usable)} tensors into {type(backbone).__name__} from {checkpoint}'
        + (f'; kept initial values of {skipped}' if skipped else ''))
