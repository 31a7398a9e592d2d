# Copyright (c) mmcnx2 contributors. All rights reserved.
import os
import os.path as osp
from argparse import ArgumentParser, Namespace
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from mmengine.config import Config, DictAction

#: Top-level config key holding the checkpoint a config starts from (FCMAE for fine-tuning,
#: the fine-tuned classifier for detection/segmentation). See :func:`rebind_pretrained`.
PRETRAINED_KEY = 'pretrained'


def parse_run_args(parser: ArgumentParser) -> Namespace:
    """Add the options tools/train.py and tools/test.py share, then parse."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings in the config, key=value pairs; pretrained=PATH re-binds '
        'the checkpoint the config starts from')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_cfg(args: Namespace) -> Config:
    """The config as tools/train.py and tools/test.py see it.

    Applies ``--cfg-options`` (``pretrained=PATH`` re-binds every use of the config's
    ``pretrained`` value, see :func:`rebind_pretrained`), ``--launcher`` and ``--work-dir``
    (default ``work_dirs/<config name>``) and, without CUDA, switches distributed runs to
    gloo so ``tools/dist_train.sh`` also works on CPU machines (see :func:`_prepare_cpu_dist`).
    """
    cfg = Config.fromfile(args.config)
    options = dict(args.cfg_options or {})
    check_pretrained_used(cfg, args.config)
    if PRETRAINED_KEY in options:
        rebind_pretrained(cfg, options[PRETRAINED_KEY], args.config)
    if options:
        cfg.merge_from_dict(options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if not torch.cuda.is_available():
        cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
        _prepare_cpu_dist(cfg)
    return cfg


def _prepare_cpu_dist(cfg: Config) -> None:
    """Let mmengine run a ``pytorch``-launched job on CPUs.

    mmengine's launcher calls ``torch.cuda.set_device`` before it creates the process group,
    and wraps the model in DDP with ``device_ids=[local_rank]``; both fail without CUDA.
    Creating the gloo group here makes mmengine skip its own set-up, and ``device_ids=None``
    is what DDP needs for a CPU model.
    """
    if cfg.launcher != 'pytorch':
        return
    if not dist.is_initialized():
        timeout = cfg.env_cfg.dist_cfg.get('timeout')
        dist.init_process_group(
            backend='gloo', **({} if timeout is None else dict(timeout=timedelta(seconds=timeout))))
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    if wrapper.get('type') == 'MMDistributedDataParallel':
        wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper


def _replace(node: Any, old: str, new: str) -> Any:
    """``node`` with every string equal to ``old`` replaced by ``new`` (dicts and lists in
    place)."""
    if isinstance(node, str):
        return new if node == old else node
    if isinstance(node, dict):
        for key, value in node.items():
            node[key] = _replace(value, old, new)
    elif isinstance(node, list):
        node[:] = [_replace(value, old, new) for value in node]
    elif isinstance(node, tuple):
        return type(node)(_replace(value, old, new) for value in node)
    return node


def _uses(node: Any, value: str) -> int:
    if isinstance(node, str):
        return int(node == value)
    if isinstance(node, dict):
        return sum(_uses(v, value) for v in node.values())
    if isinstance(node, (list, tuple)):
        return sum(_uses(v, value) for v in node)
    return 0


def check_pretrained_used(cfg: Config, name: str = 'config') -> None:
    """Refuse a ``pretrained`` value that nothing else in the config uses.

    That happens when a config changes ``pretrained`` but not the ``init_cfg`` a base
    config built from the base's value: the run would silently start from another
    checkpoint.
    """
    value = cfg.get(PRETRAINED_KEY)
    if isinstance(value, str) and value and _uses(cfg._cfg_dict, value) < 2:
        raise ValueError(
            f'{name}: `{PRETRAINED_KEY} = {value!r}` is used nowhere else in the config. A '
            'config that changes `pretrained` must also restate what uses it (e.g. '
            "model.backbone.init_cfg=dict(type='Pretrained', checkpoint=pretrained)), "
            'because base configs substitute their own value when they are parsed.')


def rebind_pretrained(cfg: Config, new: str, name: str = 'config') -> None:
    """Point every use of ``cfg.pretrained`` at ``new``, as if the config said so.

    mmengine substitutes a config variable where it is used when the file is parsed, so
    ``--cfg-options pretrained=X`` alone would change only the top-level key and not
    ``model.backbone.init_cfg.checkpoint``. This replaces every string equal to the old
    value (the top-level key included) by ``new``; options given explicitly next to it
    still win, as they are merged afterwards.
    """
    old = cfg.get(PRETRAINED_KEY)
    if not isinstance(old, str) or not old:
        raise KeyError(f'{name} has no top-level `{PRETRAINED_KEY}` path to override; '
                       f'got {old!r}. Set the checkpoint key itself instead, e.g. '
                       'model.backbone.init_cfg.checkpoint=PATH.')
    _replace(cfg._cfg_dict, old, new)
