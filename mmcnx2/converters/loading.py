# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Read ConvNeXt V2 weights of any known format from a file, an http(s) URL or a model name.

Foreign layouts (official dense or sparse FCMAE, timm, HF transformers) are detected and
converted on load by :mod:`mmcnx2.converters`; mmcnx2's own checkpoints (and mmpretrain's
ConvNeXt-V2 ones, which share the layout) pass through unchanged. Downloads are cached in
``torch.hub.get_dir()/checkpoints``, as mmengine and torchvision cache theirs, and read with the
same ``weights_only`` loader as local files.
"""
import os
import os.path as osp
import re
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import urlparse

import torch
import torch.nn as nn
from mmengine.dist import barrier, get_local_rank, get_world_size
from mmengine.logging import MMLogger
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

from .convnextv2 import convert_state_dict, detect_format, load_source, unwrap_state_dict
from .export import group_keys

# Output norms exist only for the stages a model returns, so they may be absent on either side
# (an FCMAE encoder has none; a detector has four).
OPTIONAL_KEY = re.compile(r'norm\d+\.')
# The converter's name for mmcnx2's own layout (shared with mmpretrain's ConvNeXt-V2).
OWN_FORMAT = 'mmpretrain'
URL_SCHEMES = ('http://', 'https://')
#: Where the official checkpoints are published (the model index lists them all). mmengine's
#: loaders convert files from here on load (see :func:`load_from_official_url`).
OFFICIAL_URL_PREFIX = 'https://dl.fbaipublicfiles.com/convnext/convnextv2/'


class CheckpointDownloadError(OSError):
    """A checkpoint URL could not be downloaded; the message says how to use a local copy."""


def resolve_checkpoint(checkpoint: str) -> str:
    """The file path or URL meant by ``checkpoint``.

    An existing path, an http(s) URL or another mmengine scheme (``s3://`` ...) is returned
    unchanged; a model name of :func:`mmcnx2.apis.list_models` becomes its weights URL.

    Raises:
        FileNotFoundError: none of these, naming what was looked for.
    """
    checkpoint = os.fspath(checkpoint)
    if '://' in checkpoint or osp.exists(osp.expanduser(checkpoint)):
        return checkpoint
    from ..apis.model_zoo import find_model  # reads the model index: only when needed
    try:
        info = find_model(checkpoint)
    except FileNotFoundError:  # an install without the index: names cannot be resolved
        info = None
    if info is not None and info.weights:
        return info.weights
    raise FileNotFoundError(
        f'Checkpoint {checkpoint!r} is neither a file, an http(s) URL nor the name of a model '
        'with weights in mmcnx2.apis.list_models() (e.g. '
        "'convnextv2-base_fcmae-pre_3rdparty_in1k').")


def download_checkpoint(url: str) -> str:
    """Download ``url`` once into ``torch.hub.get_dir()/checkpoints`` and return the file.

    In a distributed run the first process of each machine downloads while the others wait;
    every process reaches the barrier, also when the download fails.

    Raises:
        CheckpointDownloadError: naming the URL, the reason and how to pass a local file.
    """
    cache_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    path = osp.join(cache_dir, osp.basename(urlparse(url).path) or 'checkpoint.pth')
    failure = None
    if get_local_rank() == 0 and not osp.isfile(path):
        os.makedirs(cache_dir, exist_ok=True)
        MMLogger.get_current_instance().info(f'Downloading {url} to {path}')
        try:
            # Written to a temporary file first: an interrupted download leaves no partial file.
            torch.hub.download_url_to_file(url, path, progress=False)
        except Exception as err:
            failure = err
    if get_world_size() > 1:
        barrier()
    if failure is not None or not osp.isfile(path):
        reason = failure or 'the first process of this machine did not download it'
        raise CheckpointDownloadError(
            f'Could not download checkpoint {url}: {reason}. Download it by other means '
            f'(e.g. `wget {url}`) and pass the local file instead, e.g. '
            '`--cfg-options pretrained=/path/to/file` for a config that starts from '
            '`pretrained`, `init_cfg=dict(type=\'Pretrained\', checkpoint=\'/path/to/file\')` '
            f"or `get_model(name, pretrained='/path/to/file')`; or put it at {path}, "
            'where it is looked for first.') from failure
    return path


def load_converted_state_dict(checkpoint: str,
                              map_location: Optional[str] = 'cpu'
                              ) -> Tuple[str, 'OrderedDict[str, torch.Tensor]']:
    """Read ``checkpoint`` (model name, path, URL or HF model directory) in mmcnx2's layout.

    Args:
        checkpoint (str): See :func:`resolve_checkpoint`.
        map_location (str, optional): Device for checkpoints read through mmengine's other
            schemes; files and URLs are read on the CPU.

    Returns:
        tuple[str, OrderedDict]: The detected format (one of
        :data:`mmcnx2.converters.FORMATS`) and the state dict: unchanged for mmcnx2's own
        layout (all of a detector's or FCMAE's keys), else converted into an mmpretrain
        ``ImageClassifier``'s keys (``backbone.*``, ``head.fc.*`` when the source has a head)
        plus an FCMAE decoder as mmcnx2's ``FCMAEDecoder`` (``neck.*``).

    Raises:
        FileNotFoundError, CheckpointDownloadError, CorruptCheckpointError,
            UnsafeCheckpointError: no such file or name, a failed download, a damaged file, a
            pickle that would run code.
        ValueError: not a ConvNeXt V2 checkpoint; names the source and the keys it saw.
    """
    source = resolve_checkpoint(checkpoint)
    if source.startswith(URL_SCHEMES):
        state_dict = load_source(download_checkpoint(source))
    elif '://' in source:
        state_dict = unwrap_state_dict(
            _load_checkpoint(source, map_location=map_location, logger='current'), source)
    else:
        state_dict = load_source(osp.expanduser(source))
    try:
        fmt = detect_format(state_dict)
        if fmt == OWN_FORMAT:
            return fmt, OrderedDict(state_dict)
        # An FCMAE decoder is kept (as ``neck.*``): an FCMAE model continues from it, the
        # other loaders use what they need.
        return convert_state_dict(state_dict, keep_decoder=True)
    except ValueError as err:
        named = source if source == checkpoint else f'{checkpoint} ({source})'
        raise ValueError(f'{named}: {err}') from err


def load_fitting(module: nn.Module, state_dict: Dict[str, torch.Tensor], what: str,
                 may_be_missing: Callable[[str], bool],
                 may_be_extra: Callable[[str], bool]) -> Tuple[int, List[str]]:
    """Load ``state_dict`` into ``module`` after checking that it fits.

    Keys of ``module`` absent from ``state_dict`` must satisfy ``may_be_missing``, keys of
    ``state_dict`` that ``module`` lacks ``may_be_extra``, and every shared key must have the
    module's shape.

    Returns:
        tuple[int, list[str]]: The number of tensors loaded and the keys of ``module`` left at
        their initial values.

    Raises:
        RuntimeError: ``what``, then the missing, unexpected and mis-shaped keys.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict and not may_be_missing(k)]
    unexpected = [k for k in state_dict if k not in own and not may_be_extra(k)]
    mis_shaped = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or mis_shaped:
        raise RuntimeError(
            f'{what}:\n'
            f'  missing keys ({len(missing)}): {missing}\n'
            f'  unexpected keys ({len(unexpected)}): {unexpected}\n'
            f'  mis-shaped keys ({len(mis_shaped)}): {mis_shaped}')
    usable = {k: v for k, v in state_dict.items() if k in own}
    module.load_state_dict(usable, strict=False)
    return len(usable), [k for k in own if k not in usable]


def load_pretrained_model(model: nn.Module, checkpoint: str) -> str:
    """Load a checkpoint of any known format into a whole model (e.g. an ``ImageClassifier``).

    Weights without a classifier (FCMAE) leave the model's head as initialised; keys of
    top-level modules the model does not have (an FCMAE decoder ``neck.*``) are ignored, and
    output norms (:data:`OPTIONAL_KEY`) may be absent on either side.

    Returns:
        str: The detected format of the checkpoint.

    Raises:
        RuntimeError: listing missing, unexpected and mis-shaped keys.
    """
    fmt, state_dict = load_converted_state_dict(checkpoint)
    modules = {k.split('.', 1)[0] for k in model.state_dict()}
    loaded_modules = {k.split('.', 1)[0] for k in state_dict}

    def output_norm(key):
        return bool(OPTIONAL_KEY.match(key.split('.', 1)[-1]))

    loaded, kept = load_fitting(
        model, state_dict,
        f'Checkpoint {checkpoint} ({fmt} layout) does not fit {type(model).__name__}',
        lambda key: key.split('.', 1)[0] not in loaded_modules or output_norm(key),
        lambda key: key.split('.', 1)[0] not in modules or output_norm(key))
    kept = group_keys(kept)
    ignored = sorted(loaded_modules - modules)
    MMLogger.get_current_instance().info(
        f'Loaded {loaded} tensors into {type(model).__name__} from {checkpoint} ({fmt} '
        'layout)' + (f'; kept the initial values in {kept}' if kept else '')
        + (f'; ignored the checkpoint\'s {ignored}' if ignored else ''))
    return fmt


def load_from_official_url(filename: str, map_location=None) -> dict:
    """mmengine checkpoint loader for the official weights' URLs (:data:`OFFICIAL_URL_PREFIX`).

    Downloads once, reads with ``weights_only`` and converts into mmcnx2's layout, so
    ``load_from=URL``, ``mmengine.runner.load_checkpoint(model, URL)``, mmpretrain's
    ``get_model`` and mmengine's ``Pretrained`` init of any module see ``backbone.*`` /
    ``head.fc.*`` keys instead of silently matching nothing.
    """
    fmt, state_dict = load_converted_state_dict(filename, map_location)
    return {'state_dict': state_dict, 'meta': {'converted_from': fmt, 'source': filename}}


CheckpointLoader.register_scheme(prefixes=OFFICIAL_URL_PREFIX, loader=load_from_official_url)
