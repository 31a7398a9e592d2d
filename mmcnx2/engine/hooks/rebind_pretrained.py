# Copyright (c) mmcnx2 contributors. All rights reserved.
"""``--cfg-options pretrained=X`` for every launcher (mim, upstream tools, ``Runner``)."""
from typing import Iterator, Optional, Tuple

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from ..config import PRETRAINED_KEY


def pretrained_init_cfgs(model) -> Iterator[Tuple[str, dict]]:
    """(module name, init_cfg) of every ``Pretrained`` init_cfg in ``model``."""
    for name, module in model.named_modules():
        init_cfg = getattr(module, 'init_cfg', None)
        for cfg in init_cfg if isinstance(init_cfg, list) else [init_cfg]:
            if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
                yield name or type(model).__name__, cfg


@HOOKS.register_module()
class RebindPretrainedHook(Hook):
    """Make ``--cfg-options pretrained=X`` start the model from X with every launcher.

    mmcnx2's configs start from the checkpoint in their top-level ``pretrained`` variable,
    which mmengine writes into ``init_cfg`` when it parses the file. mmcnx2's
    ``tools/train.py`` re-binds every use of it (:func:`mmcnx2.engine.rebind_pretrained`);
    ``mim train``, mmdet's and mmseg's ``tools/train.py`` and a plain ``Runner.from_cfg`` only
    change the top-level key, so the model would start from the config's own checkpoint.
    Before the weights are initialised (``before_run`` comes first in ``Runner.train``), this
    hook points the ``Pretrained`` init_cfgs that still name the config file's own
    ``pretrained`` at the new value. Registered in mmengine's root ``HOOKS``: every scope finds
    it.

    Raises:
        ValueError: ``pretrained`` was changed, but no ``Pretrained`` init_cfg of the model
            names either value, so the change would be ignored; the message says which key to
            set instead.
    """
    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        wanted = runner.cfg.get(PRETRAINED_KEY)
        if not isinstance(wanted, str) or not wanted:
            return
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        inits = list(pretrained_init_cfgs(model))
        if any(cfg.get('checkpoint') == wanted for _, cfg in inits):
            return  # in use already (the config's own value, or re-bound by mmcnx2's tools)
        own = self._value_in_file(runner.cfg.filename)
        if wanted == own:
            return  # not overridden: the init_cfg was set explicitly, which wins
        stale = [(name, cfg) for name, cfg in inits if own and cfg.get('checkpoint') == own]
        if not stale:
            raise ValueError(
                f'{PRETRAINED_KEY}={wanted!r} is used by no init_cfg of the model (its '
                f'Pretrained init_cfgs: {[(n, c.get("checkpoint")) for n, c in inits]}; the '
                f"config's own {PRETRAINED_KEY}: {own!r}), so it would be ignored. Set the "
                "checkpoint where it is used instead, e.g. --cfg-options "
                "model.backbone.init_cfg=\"dict(type='Pretrained', checkpoint='X', "
                "prefix='backbone.')\".")
        for _, cfg in stale:
            cfg['checkpoint'] = wanted
        runner.logger.info(f'{PRETRAINED_KEY}={wanted}: re-bound the Pretrained init_cfg of '
                           f'{[name for name, _ in stale]} (was {own})')

    @staticmethod
    def _value_in_file(filename: Optional[str]) -> Optional[str]:
        """``pretrained`` as the config file itself sets it (before any override)."""
        if not filename:
            return None
        value = Config.fromfile(filename).get(PRETRAINED_KEY)
        return value if isinstance(value, str) else None
