# Copyright (c) mmcnx2 contributors. All rights reserved.
"""``--cfg-options`` that cannot silently miss: unknown keys and malformed values are errors.

mmengine merges ``--cfg-options`` into the config creating whatever key is named, so a typo
(``pretrianed=X``, ``train_cfgg.max_iters=2``) is ignored and the run goes on with the
config's value, or fails much later (``default_hooks.checkpoint.intervl=1`` at the first
save). Here every dotted key must name something that exists:

- a key of the config (list entries by index: ``train_pipeline.1.scale=...``);
- or an argument of the class a dict builds (its ``type``, looked up in the registries of
  the config's scope; mmengine's implied types for ``optim_wrapper``, ``train_cfg``,
  ``val_cfg``, ``test_cfg``, ``log_processor`` and ``default_hooks.*``), e.g.
  ``default_hooks.checkpoint.max_keep_ckpts=1`` where the config does not set it;
- or, at the top level, an argument of the runner (``load_from``, ``resume``, ...).

Anything else is an error that names the closest existing key. A key meant to be new is
written with a leading ``+`` (``--cfg-options +model.backbone.my_new_arg=1``), which skips
the check for that key. A value replacing a number must be a number, one replacing a bool
a bool.
"""
import difflib
import importlib
import inspect
from argparse import ArgumentParser, Namespace
from typing import Any, List, Optional, Sequence, Set

from mmengine.config import Config, DictAction
from mmengine.registry import Registry

#: Marks a ``--cfg-options`` key as deliberately new: ``+key=value``.
NEW_KEY = '+'

# Dicts mmengine builds with a default type when they name none.
_IMPLIED_TYPES = {
    ('optim_wrapper', ): 'OptimWrapper',
    ('val_cfg', ): 'ValLoop',
    ('test_cfg', ): 'TestLoop',
    ('log_processor', ): 'LogProcessor',
    ('default_hooks', 'runtime_info'): 'RuntimeInfoHook',
    ('default_hooks', 'timer'): 'IterTimerHook',
    ('default_hooks', 'sampler_seed'): 'DistSamplerSeedHook',
    ('default_hooks', 'logger'): 'LoggerHook',
    ('default_hooks', 'param_scheduler'): 'ParamSchedulerHook',
    ('default_hooks', 'checkpoint'): 'CheckpointHook',
}


class ConfigOptionError(ValueError):
    """A ``--cfg-options`` entry is malformed, names no key of the config, or gives a value
    of the wrong kind."""


class CfgOptionsAction(DictAction):
    """mmengine's ``DictAction`` (``KEY=VALUE``, lists as ``[a,b]``) that reports an entry
    without ``=`` as a usage error instead of a bare ``ValueError`` from unpacking."""

    def __call__(self, parser: ArgumentParser, namespace: Namespace, values,
                 option_string: Optional[str] = None) -> None:
        for entry in values or []:
            key, sep, _ = entry.partition('=')
            if not sep or not key.lstrip(NEW_KEY):
                parser.error(
                    f'{option_string} {entry!r}: expected KEY=VALUE, e.g. '
                    'train_cfg.max_iters=2, model.head.num_classes=10 or a list as '
                    'param_scheduler.0.milestones=[8,11]')
        super().__call__(parser, namespace, values, option_string)


def check_options(cfg: Config, options: dict, source: str) -> dict:
    """Validate ``--cfg-options`` against ``cfg``.

    Args:
        cfg (Config): The config they will be merged into.
        options (dict): As parsed by :class:`CfgOptionsAction`.
        source (str): The config file, named in errors.

    Returns:
        dict: ``options`` with the ``+`` marks of deliberately new keys removed.

    Raises:
        ConfigOptionError: naming the option, what is wrong and the closest existing key.
    """
    checked = {}
    for key, value in options.items():
        if key.startswith(NEW_KEY):
            checked[key[len(NEW_KEY):]] = value
            continue
        _check_key(cfg, key, value, source)
        checked[key] = value
    return checked


def _check_key(cfg: Config, key: str, value: Any, source: str) -> None:
    parts = key.split('.')
    node: Any = cfg._cfg_dict
    for depth, part in enumerate(parts):
        where = '.'.join(parts[:depth])
        if isinstance(node, (list, tuple)):
            if part.isdigit() and int(part) < len(node):
                node = node[int(part)]
                continue
            raise ConfigOptionError(
                f'{source}: --cfg-options {key}: `{where}` is a list with indices '
                f'0..{len(node) - 1}; {part!r} is not one of them.')
        if not isinstance(node, dict):
            raise ConfigOptionError(
                f'{source}: --cfg-options {key}: `{where}` is {node!r}, not a dict, so it has '
                f'no key {part!r}; give `{where}` a dict in the config first.')
        if part in node:
            node = node[part]
            continue
        known = _known_arguments(cfg, parts[:depth], node)
        if part in known or part == '_delete_':
            return  # an argument the config leaves at its default
        candidates = sorted(set(map(str, node)) | known)
        close = difflib.get_close_matches(part, candidates, n=1, cutoff=0.6)
        scope = f'`{where}`' if where else 'the config (top level)'
        hint = f' Did you mean `{".".join(parts[:depth] + close)}`?' if close else ''
        raise ConfigOptionError(
            f'{source}: --cfg-options {key}: {scope} has no key {part!r}.{hint} '
            f'Existing keys there: {_sample(sorted(k for k in map(str, node) if k[0] != "_"))}. '
            f'To add a new key on '
            f'purpose, write it as {NEW_KEY}{key}=VALUE.')
    problem = _kind_problem(node, value)
    if problem:
        raise ConfigOptionError(
            f'{source}: --cfg-options {key}={value!r}: {problem} (the config has '
            f'{node!r}).')


def _kind_problem(old: Any, new: Any) -> str:
    if new is None or isinstance(old, type(None)):
        return ''
    if isinstance(old, bool):
        return '' if isinstance(new, bool) else 'expects True or False'
    if isinstance(old, (int, float)) and not isinstance(new, (int, float)):
        return 'expects a number'
    return ''


def _known_arguments(cfg: Config, path: Sequence[str], node: dict) -> Set[str]:
    """Names that may be added under ``path`` although the config does not set them."""
    if not path:  # the top level: what the runners read
        from mmengine.runner import FlexibleRunner, Runner
        return _arguments(Runner) | _arguments(FlexibleRunner) | {'runner_type'}
    target = node.get('type')
    if target is None and tuple(path) == ('train_cfg', ):
        target = 'EpochBasedTrainLoop' if node.get('by_epoch', True) else 'IterBasedTrainLoop'
        return _arguments_of(target, cfg) | {'by_epoch'}
    if target is None:
        target = _IMPLIED_TYPES.get(tuple(path))
    if target is None:
        return set()
    return _arguments_of(target, cfg)


def _arguments_of(target: Any, cfg: Config) -> Set[str]:
    if not isinstance(target, str):
        return _arguments(target) if callable(target) else set()
    found: Set[str] = set()
    for obj in _registered(target, cfg.get('default_scope')):
        found |= _arguments(obj)
    return found


def _registered(name: str, scope: Optional[str]) -> List[Any]:
    """Every class or function registered as ``name`` in the scope's registries or
    mmengine's root ones (looked up only for keys the config does not have)."""
    import mmengine.registry as root
    modules = [root]
    if scope and scope != 'mmengine':
        try:
            modules.insert(0, importlib.import_module(f'{scope}.registry'))
        except ImportError:
            pass
    found = []
    for module in modules:
        for registry in vars(module).values():
            if not isinstance(registry, Registry):
                continue
            try:
                obj = registry.get(name)
            except Exception:  # a registry whose lazy imports fail is not the one meant
                continue
            if obj is not None:
                found.append(obj)
    return found


def _arguments(obj: Any) -> Set[str]:
    """Keyword arguments of a function, or of the ``__init__`` of a class and its bases
    (subclasses often pass ``**kwargs`` on)."""
    functions = ([vars(c)['__init__'] for c in inspect.getmro(obj) if '__init__' in vars(c)]
                 if inspect.isclass(obj) else [obj])
    names: Set[str] = set()
    for function in functions:
        try:
            parameters = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            continue
        names |= {p.name for p in parameters
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names - {'self'}


def _sample(names: List[str], n: int = 12) -> str:
    return ', '.join(names[:n]) + (f', ... ({len(names)} in all)' if len(names) > n else '')
