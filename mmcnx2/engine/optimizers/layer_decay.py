# Copyright (c) mmcnx2 contributors. All rights reserved.
from functools import partial
from typing import Callable, List, Optional

import torch.nn as nn
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmpretrain.engine.optimizers import LearningRateDecayOptimWrapperConstructor

from ..fsdp import FSDPParamsMixin


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(FSDPParamsMixin,
                                        LearningRateDecayOptimWrapperConstructor):
    """Layer-wise lr decay for any model whose backbone answers ``get_layer_depth``.

    One constructor for classifiers, FCMAE, Mask R-CNN and UperNet: it is registered in
    mmengine's root registry, so mmpretrain, mmdet and mmseg scopes all find it. Parameters
    outside the backbone (necks, heads, decoders) get lr scale 1.

    ``paramwise_cfg`` takes mmpretrain's keys (``layer_decay_rate``, ``norm_decay_mult``,
    ``bias_decay_mult``, ``flat_decay_mult``, ``custom_keys``) plus ``decay_type`` and
    ``num_layers``, passed to the backbone's ``get_layer_depth`` (ConvNeXtV2: ``'group'``,
    ``'block'``, or ``'stage_wise'`` with an optional ``num_layers``). Under
    mmengine's ``FSDPStrategy`` the groups are those of the unwrapped model
    (:class:`~mmcnx2.engine.fsdp.FSDPParamsMixin`).
    """

    def add_params(self,
                   params: List[dict],
                   module: nn.Module,
                   prefix: str = '',
                   get_layer_depth: Optional[Callable] = None,
                   **kwargs) -> None:
        if get_layer_depth is None:
            if self.base_wd is None:
                raise ValueError('LayerDecayOptimWrapperConstructor needs an explicit '
                                 '`weight_decay` in optim_wrapper.optimizer')
            backbone = getattr(module, 'backbone', None)
            if backbone is None or not hasattr(backbone, 'get_layer_depth'):
                raise TypeError(f'{type(module).__name__} has no backbone with '
                                '`get_layer_depth`; layer-wise lr decay needs one.')
            grouping = dict(decay_type=self.paramwise_cfg.get('decay_type', 'group'))
            if 'num_layers' in self.paramwise_cfg:
                grouping['num_layers'] = self.paramwise_cfg['num_layers']
            get_layer_depth = partial(
                backbone.get_layer_depth, prefix='backbone.', **grouping)
        super().add_params(params, module, prefix, get_layer_depth, **kwargs)
