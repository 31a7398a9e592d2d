# Copyright (c) mmcnx2 contributors. All rights reserved.
"""mmcnx2's model zoo: every model of ``model-index.yml`` by name, with the official ConvNeXt V2
checkpoints (FCMAE pretrained, IN-1K and IN-22K fine-tuned) as their weights.

The index is the one mim reads (``mim search mmcnx2``): ``mmcnx2/.mim/model-index.yml`` of an
installed package, or ``model-index.yml`` at the root of a source checkout.
"""
import fnmatch
import os.path as osp
from functools import lru_cache
from typing import Any, Dict, List, NamedTuple, Optional, Union

import torch.nn as nn
import yaml

from ..converters import load_pretrained_model

PACKAGE_DIR = osp.dirname(osp.dirname(osp.realpath(__file__)))
INDEX_FILE = 'model-index.yml'


class ModelInfo(NamedTuple):
    """One model of the index.

    Args:
        name (str): Its name (``Name`` in the metafile).
        config (str): Absolute path of its config.
        weights (str | None): URL of its weights (``Weights``), None for a recipe without.
        results (list[dict]): The metafile's ``Results`` (task, dataset, metrics).
        metafile (str): The metafile listing it.
    """
    name: str
    config: str
    weights: Optional[str]
    results: List[Dict[str, Any]]
    metafile: str


def model_index_path() -> str:
    """``model-index.yml`` of the installed package (``mmcnx2/.mim``) or of the checkout."""
    candidates = (osp.join(PACKAGE_DIR, '.mim', INDEX_FILE),
                  osp.join(osp.dirname(PACKAGE_DIR), INDEX_FILE))
    for path in candidates:
        if osp.isfile(path):
            return path
    raise FileNotFoundError(f'No {INDEX_FILE} at {" or ".join(candidates)}; reinstall mmcnx2 '
                            '(pip install .), which puts it into mmcnx2/.mim')


@lru_cache(maxsize=None)
def load_model_index(path: str) -> Dict[str, ModelInfo]:
    """The models of the index at ``path`` (its ``Import`` metafiles), by lower-case name.

    Raises:
        ValueError: a name appears twice, or a model has no ``Config``; naming the metafiles.
    """
    root = osp.dirname(osp.abspath(path))
    with open(path) as f:
        index = yaml.safe_load(f) or {}
    models: Dict[str, ModelInfo] = {}
    for relative in index.get('Import') or []:
        metafile = osp.join(root, relative)
        with open(metafile) as f:
            entries = (yaml.safe_load(f) or {}).get('Models') or []
        for entry in entries:
            name = entry['Name']
            if name.lower() in models:
                raise ValueError(f'Model name {name} is in both {models[name.lower()].metafile} '
                                 f'and {metafile}')
            if not entry.get('Config'):
                raise ValueError(f'{metafile}: model {name} has no Config')
            models[name.lower()] = ModelInfo(name, osp.join(root, entry['Config']),
                                             entry.get('Weights'), entry.get('Results') or [],
                                             metafile)
    return models


def list_models(pattern: Optional[str] = None, with_weights: bool = False) -> List[str]:
    """Names of the models in mmcnx2's index.

    Args:
        pattern (str, optional): Shell-style wildcard, e.g. ``'convnextv2-base*3rdparty*'``.
        with_weights (bool): Only models with weights (the official checkpoints).
    """
    names = [info.name for info in load_model_index(model_index_path()).values()
             if info.weights or not with_weights]
    return sorted(fnmatch.filter(names, pattern) if pattern else names)


def find_model(name: str) -> Optional[ModelInfo]:
    """The index entry of ``name`` (case-insensitive), or None."""
    return load_model_index(model_index_path()).get(name.lower())


def _without_pretrained_init(node: Any) -> Any:
    """``node`` with every ``init_cfg`` of type ``Pretrained`` removed (in place)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'init_cfg':
                kept = [c for c in (value if isinstance(value, list) else [value])
                        if not (isinstance(c, dict) and c.get('type') == 'Pretrained')]
                node[key] = kept if isinstance(value, list) else (kept[0] if kept else None)
            else:
                _without_pretrained_init(value)
    elif isinstance(node, list):
        for value in node:
            _without_pretrained_init(value)
    return node


def get_model(name: str,
              pretrained: Union[bool, str] = False,
              device: Optional[str] = None,
              **model_overrides) -> nn.Module:
    """Build a model of mmcnx2's index by name, optionally with weights.

    Args:
        name (str): A name of :func:`list_models`, e.g.
            ``'convnextv2-tiny_fcmae-pre_3rdparty_in1k'`` (official IN-1K fine-tuned tiny).
        pretrained (bool | str): True loads the model's official weights (downloaded once
            into the torch hub cache, converted on load); a string loads that checkpoint
            instead (path, URL or model name; any format the converter knows). False builds
            the model with its initialisation only. Weights without a classifier (FCMAE)
            leave the head as initialised.
        device (str, optional): Move the model there.
        **model_overrides: Merged into the config's ``model``, e.g.
            ``backbone=dict(out_indices=(0, 1, 2, 3))``.

    Returns:
        nn.Module: The model in eval mode, with its config as ``model.cfg``.

    Raises:
        ValueError: unknown name (listing similar ones), or ``pretrained=True`` for a model
            without weights.
    """
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope
    info = find_model(name)
    if info is None:
        prefix = name.split('_')[0].lower()
        similar = [model for model in list_models() if model.lower().startswith(prefix)]
        raise ValueError(f'Unknown model {name!r}; ' + (
            f'models with the prefix {prefix!r}: {similar}' if similar else
            f'known models: {list_models()}'))
    if pretrained is True and not info.weights:
        raise ValueError(f'Model {info.name} has no weights in {info.metafile}; pass '
                         'pretrained=PATH, or see list_models(with_weights=True)')
    cfg = Config.fromfile(info.config)
    if model_overrides:
        cfg.merge_from_dict(dict(model=model_overrides))
    # The config's `pretrained` chain (FCMAE -> fine-tuning -> downstream) is for training.
    model_cfg = _without_pretrained_init(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmpretrain')):
        model = MODELS.build(model_cfg)
    model.init_weights()
    checkpoint = info.weights if pretrained is True else pretrained or None
    if checkpoint:
        load_pretrained_model(model, checkpoint)
    model.cfg = cfg
    return model.to(device).eval()


def register_in_mmpretrain() -> None:
    """Add mmcnx2's index to mmpretrain's ``ModelHub`` (idempotent), so that
    ``mmpretrain.get_model(name, pretrained=True)`` and ``mmpretrain.list_models`` know these
    models too. mmengine's loader converts the official weights there (see
    :func:`mmcnx2.converters.loading.load_from_official_url`)."""
    from mmpretrain.apis import ModelHub
    index = model_index_path()
    if not any(ModelHub.has(key) for key in load_model_index(index)):
        ModelHub.register_model_index(index, config_prefix=osp.dirname(index))
