# Copyright (c) mmcnx2 contributors. All rights reserved.
import os
import os.path as osp
import sys
from argparse import ArgumentParser, Namespace
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from mmengine.config import Config

from .cfg_options import NEW_KEY, CfgOptionsAction, ConfigOptionError, check_options
from .checkpoint import install_safe_checkpoint_loading
from .launch import export_slurm_env, prepare_cpu_strategy

#: Top-level config key holding the checkpoint a config starts from (FCMAE for fine-tuning,
#: the fine-tuned classifier for detection/segmentation). See :func:`rebind_pretrained`.
PRETRAINED_KEY = 'pretrained'


def parse_run_args(parser: ArgumentParser) -> Namespace:
    """Add the options tools/train.py and tools/test.py share, then parse."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=CfgOptionsAction,
        help='override settings in the config, key=value pairs. A key must exist in the '
        f'config (or be an argument of what it builds); prefix a new key with {NEW_KEY}. '
        'pretrained=PATH re-binds the checkpoint the config starts from')
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

    Checks and applies ``--cfg-options`` (see :mod:`mmcnx2.engine.cfg_options`;
    ``pretrained=PATH`` re-binds every use of the config's ``pretrained`` value, see
    :func:`rebind_pretrained`), ``--launcher`` and ``--work-dir`` (default
    ``work_dirs/<config name>``). Starts nothing: distributed set-up is
    :func:`prepare_distributed`.

    Raises:
        ConfigOptionError: an option names no key of the config or has a value of the
            wrong kind.
    """
    cfg = Config.fromfile(args.config)
    options = check_options(cfg, dict(args.cfg_options or {}), args.config)
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
    return cfg


def load_cfg_or_exit(args: Namespace) -> Config:
    """:func:`load_cfg` for the tools: a bad ``--cfg-options`` ends the command with its
    message (exit status 2, as argparse's usage errors) instead of a traceback."""
    try:
        return load_cfg(args)
    except ConfigOptionError as err:
        print(f'error: {err}', file=sys.stderr)
        sys.exit(2)


def prepare_distributed(cfg: Config) -> None:
    """Let mmengine run a ``pytorch``- or ``slurm``-launched job on CPUs (tools/train.py and
    test.py call it explicitly, after :func:`load_cfg`).

    Without CUDA: selects the gloo backend and creates the process group, because mmengine's
    launchers call ``torch.cuda.set_device`` before creating it; the group existing makes
    mmengine skip its own set-up (for ``slurm``, srun's variables are exported first, see
    :func:`mmcnx2.engine.launch.export_slurm_env`). Model wrappers default to a CUDA device:
    the default runner's DDP gets ``device_ids=None`` unless the config chose a wrapper
    itself, and a ``FlexibleRunner``'s strategy is pointed at the CPU
    (:func:`mmcnx2.engine.launch.prepare_cpu_strategy`). With CUDA it does nothing.
    """
    if torch.cuda.is_available():
        return
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if cfg.launcher not in ('pytorch', 'slurm'):
        return
    if not dist.is_initialized():
        if cfg.launcher == 'slurm':
            export_slurm_env()
        timeout = cfg.env_cfg.dist_cfg.get('timeout')
        dist.init_process_group(
            backend='gloo', **({} if timeout is None else dict(timeout=timedelta(seconds=timeout))))
    if cfg.get('runner_type', 'Runner') != 'Runner':
        prepare_cpu_strategy(cfg)
        return
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    if wrapper.get('type') == 'MMDistributedDataParallel':
        wrapper.setdefault('device_ids', None)
    cfg.model_wrapper_cfg = wrapper


def prepare_run(args: Namespace) -> Config:
    """What tools/train.py and tools/test.py do before building the runner, in one explicit
    step: :func:`load_cfg_or_exit`, the safe checkpoint loading
    (:func:`mmcnx2.engine.install_safe_checkpoint_loading`), :func:`prepare_distributed`."""
    cfg = load_cfg_or_exit(args)
    install_safe_checkpoint_loading()
    prepare_distributed(cfg)
    return cfg


def build_runner(cfg: Config):
    """The runner the config asks for, as mmdet's and mmpretrain's tools build it: mmengine's
    ``Runner`` unless the config sets ``runner_type`` (e.g. ``'FlexibleRunner'`` for FSDP
    or DeepSpeed strategies), which is built from mmengine's ``RUNNERS``."""
    if 'runner_type' not in cfg:
        from mmengine.runner import Runner
        return Runner.from_cfg(cfg)
    from mmengine.registry import RUNNERS
    return RUNNERS.build(cfg)


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
        raise ConfigOptionError(f'{name} has no top-level `{PRETRAINED_KEY}` path to override; '
                       f'got {old!r}. Set the checkpoint key itself instead, e.g. '
                       'model.backbone.init_cfg.checkpoint=PATH.')
    _replace(cfg._cfg_dict, old, new)
