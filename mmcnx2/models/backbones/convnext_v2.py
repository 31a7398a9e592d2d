# Copyright (c) mmcnx2 contributors. All rights reserved.
"""ConvNeXt V2 backbone with an optional FCMAE patch mask.

Layout of the state dict follows mmpretrain's ``ConvNeXt`` (``downsample_layers``,
``stages.{s}.{b}.depthwise_conv`` ...), so mmpretrain ConvNeXt-V2 checkpoints load as they are
and mmdet/mmseg's ConvNeXt layer-decay constructors parse our parameter names correctly.
"""
import re
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from mmpretrain.models.backbones.base_backbone import BaseBackbone

from ...registry import register_model
from ..utils import (GRN, LayerNorm2d, expand_patch_mask, fast_block, init_convnext_weights,
                     load_pretrained_backbone)

# Side of an FCMAE mask patch: the stride of the last stage (every stage stride divides it).
MASK_PATCH_SIZE = 32


class ConvNeXtV2Block(BaseModule):
    """ConvNeXt V2 block: dwconv 7x7 -> LN -> Linear(C, 4C) -> GELU -> GRN -> Linear(4C, C).

    :meth:`residual` is the formula. Eager runs (training and inference) take a fast
    implementation with the same numbers (:mod:`~mmcnx2.models.utils.fast_block`, which decides
    when it applies); tracing, scripting, export and forward hooks on the block's layers get
    the formula.

    Args:
        channels (int): Input and output channels C.
        mlp_ratio (float): Hidden width of the MLP as a multiple of C. Defaults to 4.
        drop_path_rate (float): Stochastic depth rate of the residual branch.
        with_cp (bool): Recompute the block in backward to save activation memory.
        recompute_grn (bool, optional): The fast path recomputes GELU's and GRN's outputs in
            backward instead of keeping them (see :func:`~mmcnx2.models.utils.grn_function.grn`):
            the block then keeps one (N, H, W, 4C) tensor for backward instead of three.
            Defaults to None: on CUDA only.
        grn_stats (str): GRN statistics per ``'sample'`` or over the ``'batch'``
            (see :class:`~mmcnx2.models.utils.GRN`). Defaults to ``'sample'``.

    Shapes:
        x: (N, C, H, W). visible: None or (N, 1, H, W), 1 at kept sites and 0 at removed ones
        (FCMAE encoder; x must be zero there). Removed sites stay zero and are excluded from
        GRN statistics. returns: (N, C, H, W), channels_last when x is.
    """
    # mmengine's BaseModule property, which TorchScript cannot compile.
    __jit_unused_properties__ = ['is_init']

    def __init__(self,
                 channels: int,
                 mlp_ratio: float = 4.,
                 drop_path_rate: float = 0.,
                 with_cp: bool = False,
                 recompute_grn: Optional[bool] = None,
                 grn_stats: str = 'sample',
                 init_cfg=None):
        super().__init__(init_cfg)
        hidden = int(mlp_ratio * channels)
        self.depthwise_conv = nn.Conv2d(
            channels, channels, kernel_size=7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pointwise_conv1 = nn.Linear(channels, hidden)
        self.act = nn.GELU()
        self.grn = GRN(hidden, stats=grn_stats)
        self.pointwise_conv2 = nn.Linear(hidden, channels)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 \
            else nn.Identity()
        self.with_cp = with_cp
        self.recompute_grn = recompute_grn

    def forward(self,
                x: torch.Tensor,
                visible: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not torch.jit.is_scripting():  # TorchScript compiles the formula alone
            if fast_block.use_fast_path(self, x):
                return fast_block.forward(self, x, visible)
            if self.with_cp and x.requires_grad:
                residual = cp.checkpoint(self.residual, x, visible, use_reentrant=False)
                return x + self.drop_path(residual)
        return x + self.drop_path(self.residual(x, visible))

    def residual(self,
                 x: torch.Tensor,
                 visible: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The residual branch as the formula (shapes as :meth:`forward`)."""
        x = self.depthwise_conv(x).permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = self.act(self.pointwise_conv1(self.norm(x)))
        if visible is not None:
            # Zero at removed sites: they drop out of the GRN statistics.
            x = x * visible.permute(0, 2, 3, 1)
        x = self.pointwise_conv2(self.grn(x))
        x = x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        return x if visible is None else x * visible


@register_model
class ConvNeXtV2(BaseBackbone):
    """ConvNeXt V2 (https://arxiv.org/abs/2301.00808) for mmpretrain, mmdet and mmseg.

    Args:
        arch (str | dict): One of ``ConvNeXtV2.arch_settings`` (atto, femto, pico, nano, tiny,
            base, large, huge) or a dict with ``depths`` and ``channels`` (4 ints each).
        in_channels (int): Input image channels. Defaults to 3.
        out_indices (int | Sequence[int]): Stages whose outputs are returned; each gets its
            own LayerNorm (``norm{i}``) with ``out_norms``. Defaults to -1 (last stage).
        frozen_stages (int): Stages (with their downsample layers) to freeze, counted from the
            stem; 0 freezes nothing. Defaults to 0.
        drop_path_rate (float): Stochastic depth rate of the last block; grows linearly from 0.
        gap_before_final_norm (bool): Global-average-pool each output before its norm and
            return (N, C) vectors, as a classification backbone. Defaults to True.
        with_cp (bool): Gradient checkpointing for every block. Defaults to False.
        recompute_grn (bool, optional): Every block recomputes GELU's and GRN's outputs in
            backward instead of keeping them: about half the activation memory for one more
            elementwise pass. Defaults to None: on CUDA only (see :class:`ConvNeXtV2Block`).
        out_norms (bool): Normalise each output with its own LayerNorm ``norm{i}``. False
            returns the stages' outputs as they are, with no ``norm{i}`` parameters (the FCMAE
            encoder). Defaults to True.
        grn_stats (str): Every GRN's statistics per ``'sample'`` (the paper, the dense official
            model) or over the ``'batch'`` (the official sparse FCMAE encoder pools them over
            the visible sites of all samples of the per-device batch). Defaults to
            ``'sample'``.
        init_cfg (dict | list[dict], optional): mmengine init config; a ``Pretrained`` entry
            is loaded strictly (see :meth:`init_weights`).

    Shapes:
        x: (N, in_channels, H, W).
        mask: None, or (N, H/32, W/32) with 1 = removed patch (FCMAE). Sparse semantics:
            removed sites are zero after the stem, each downsample, each depthwise conv and
            each block, and excluded from GRN statistics.
        returns: tuple (a list when scripted) with one tensor per ``out_indices`` entry,
            (N, C_i) with ``gap_before_final_norm`` else (N, C_i, H / 2**(i+2), W / 2**(i+2)).
    """
    __jit_unused_properties__ = ['is_init']  # as ConvNeXtV2Block's
    arch_settings = {
        'atto': dict(depths=[2, 2, 6, 2], channels=[40, 80, 160, 320]),
        'femto': dict(depths=[2, 2, 6, 2], channels=[48, 96, 192, 384]),
        'pico': dict(depths=[2, 2, 6, 2], channels=[64, 128, 256, 512]),
        'nano': dict(depths=[2, 2, 8, 2], channels=[80, 160, 320, 640]),
        'tiny': dict(depths=[3, 3, 9, 3], channels=[96, 192, 384, 768]),
        'base': dict(depths=[3, 3, 27, 3], channels=[128, 256, 512, 1024]),
        'large': dict(depths=[3, 3, 27, 3], channels=[192, 384, 768, 1536]),
        'huge': dict(depths=[3, 3, 27, 3], channels=[352, 704, 1408, 2816]),
    }
    # Layer-decay groupings understood by get_layer_depth.
    layer_decay_types = ('group', 'block', 'stage_wise')

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = -1,
                 frozen_stages: int = 0,
                 drop_path_rate: float = 0.,
                 gap_before_final_norm: bool = True,
                 with_cp: bool = False,
                 recompute_grn: Optional[bool] = None,
                 out_norms: bool = True,
                 grn_stats: str = 'sample',
                 init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.depths, self.channels = self._parse_arch(arch)
        num_stages = len(self.depths)
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        self.out_indices = sorted(i % num_stages for i in out_indices)
        if not all(-num_stages <= i < num_stages for i in out_indices):
            raise ValueError(f'out_indices {list(out_indices)} out of range for '
                             f'{num_stages} stages')
        if not 0 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in [0, {num_stages}], '
                             f'got {frozen_stages}')
        self.frozen_stages = frozen_stages
        self.gap_before_final_norm = gap_before_final_norm
        self.out_norms = out_norms

        self.downsample_layers = nn.ModuleList([
            nn.Sequential(
                nn.Conv2d(in_channels, self.channels[0], kernel_size=4, stride=4),
                LayerNorm2d(self.channels[0], eps=1e-6))
        ])
        for i in range(1, num_stages):
            self.downsample_layers.append(
                nn.Sequential(
                    LayerNorm2d(self.channels[i - 1], eps=1e-6),
                    nn.Conv2d(self.channels[i - 1], self.channels[i],
                              kernel_size=2, stride=2)))

        num_blocks = sum(self.depths)
        rates = [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
        self.stages = nn.ModuleList()
        for i, depth in enumerate(self.depths):
            first = sum(self.depths[:i])
            self.stages.append(
                nn.Sequential(*[
                    ConvNeXtV2Block(
                        self.channels[i],
                        drop_path_rate=rates[first + j],
                        with_cp=with_cp,
                        recompute_grn=recompute_grn,
                        grn_stats=grn_stats) for j in range(depth)
                ]))

        if out_norms:
            for i in self.out_indices:
                self.add_module(f'norm{i}', LayerNorm2d(self.channels[i], eps=1e-6))

        self._freeze_stages()

    @classmethod
    def _parse_arch(cls, arch) -> Tuple[list, list]:
        if isinstance(arch, str):
            if arch not in cls.arch_settings:
                raise ValueError(
                    f'Unknown ConvNeXtV2 arch {arch!r}; valid archs are '
                    f'{sorted(cls.arch_settings)} or a dict with "depths" and '
                    '"channels".')
            arch = cls.arch_settings[arch]
        if not isinstance(arch, dict) or set(arch) != {'depths', 'channels'}:
            raise ValueError('A custom ConvNeXtV2 arch must be a dict with exactly the '
                             f'keys "depths" and "channels", got {arch!r}')
        depths, channels = list(arch['depths']), list(arch['channels'])
        # Four stages: the FCMAE mask patch (MASK_PATCH_SIZE) is the last stage's stride.
        if len(depths) != 4 or len(channels) != 4:
            raise ValueError(f'arch depths {depths} and channels {channels} must have '
                             '4 entries each (one per stage)')
        return depths, channels

    def init_weights(self):
        """Spec init (trunc_normal 0.02 for conv/linear weights, zero biases, zero GRN),
        or a strict ``Pretrained`` load that names missing, unexpected and mis-shaped keys.
        """
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            load_pretrained_backbone(self, **{k: v for k, v in self.init_cfg.items()
                                              if k != 'type'})
            self._is_init = True
            return
        if self.init_cfg is None:
            # Not BaseModule's: its report, written before this init runs, would call every
            # parameter "the same before and after `init_weights`". A parent model's report
            # still records this init ("Initialized by user-defined `init_weights`").
            init_convnext_weights(self)
            self._is_init = True
            return
        super().init_weights()

    def forward(self,
                x: torch.Tensor,
                mask: Optional[torch.Tensor] = None):
        # Named errors for eager callers; a traced or scripted graph has fixed shapes.
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():
            self._check_inputs(x, mask)
        if mask is not None:
            mask = mask.to(x.dtype)
        # Outputs keep the caller's memory format: mmcv ops (RoIAlign, DCN, ...) silently
        # misread channels_last tensors (open-mmlab/mmcv#2203).
        out_format = torch.channels_last if x.is_contiguous(
            memory_format=torch.channels_last) and not x.is_contiguous() \
            else torch.contiguous_format
        # Channels-last end to end inside: the blocks' (N, H, W, C) views are then free.
        x = x.contiguous(memory_format=torch.channels_last)
        outs = []
        for i, (downsample, stage) in enumerate(zip(self.downsample_layers, self.stages)):
            x = downsample(x)
            visible: Optional[torch.Tensor] = None
            if mask is not None:
                # One mask patch covers MASK_PATCH_SIZE / stride sites of each side.
                visible = 1. - expand_patch_mask(mask, x.shape[-1] // mask.shape[-1])
                x = x * visible
            for block in stage:
                x = block(x, visible)
            if i in self.out_indices:
                if self.gap_before_final_norm:
                    outs.append(self._out_norm(i, x.mean((-2, -1), keepdim=True)).flatten(1))
                else:
                    outs.append(self._out_norm(i, x).contiguous(memory_format=out_format))
        if torch.jit.is_scripting():
            return outs  # TorchScript has no tuples of a size known at run time only
        return tuple(outs)

    def _out_norm(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """``norm{i}(x)``, or x without output norms. Spelled out: TorchScript resolves only
        literal attribute names (``hasattr`` is evaluated when scripting)."""
        if hasattr(self, 'norm0') and i == 0:
            return self.norm0(x)
        if hasattr(self, 'norm1') and i == 1:
            return self.norm1(x)
        if hasattr(self, 'norm2') and i == 2:
            return self.norm2(x)
        if hasattr(self, 'norm3') and i == 3:
            return self.norm3(x)
        return x

    def _check_inputs(self, x: torch.Tensor, mask: Optional[torch.Tensor]):
        if x.dim() != 4 or x.shape[1] != self.downsample_layers[0][0].in_channels:
            raise ValueError(
                f'ConvNeXtV2 expects (N, {self.downsample_layers[0][0].in_channels}, H, W) '
                f'input, got shape {tuple(x.shape)}')
        if mask is None:
            return
        height, width = x.shape[-2:]
        if height % MASK_PATCH_SIZE or width % MASK_PATCH_SIZE:
            raise ValueError(
                f'Masked (FCMAE) input sides must be multiples of {MASK_PATCH_SIZE}, '
                f'got {height}x{width}')
        expected = (x.shape[0], height // MASK_PATCH_SIZE, width // MASK_PATCH_SIZE)
        if tuple(mask.shape) != expected:
            raise ValueError(f'mask shape {tuple(mask.shape)} does not match input '
                             f'{tuple(x.shape)}; expected {expected}')

    def _freeze_stages(self):
        for i in range(self.frozen_stages):
            for module in (self.downsample_layers[i], self.stages[i]):
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        return self

    def get_layer_depth(self,
                        param_name: str,
                        prefix: str = '',
                        decay_type: str = 'group',
                        num_layers: Optional[int] = None) -> Tuple[int, int]:
        """Layer id of a parameter for layer-wise lr decay, as the official recipes group them.

        The lr scale of a parameter is ``rate ** (total - layer_id - 1)``.

        Args:
            param_name (str): Parameter name, e.g. ``backbone.stages.2.4.grn.gamma``.
            prefix (str): Prefix of this backbone in ``param_name``.
            decay_type (str): ``'group'``: 12 groups (6 when the third stage has at most 9
                blocks), stage 3 split in blocks of three (ConvNeXt-V2 ``optim_factory.py``
                ``group``, the ConvNeXt detection recipe's ``layer_wise``). ``'block'``: one
                layer per block (ConvNeXt-V2 ``single``). ``'stage_wise'``: the ConvNeXt
                segmentation recipe's rule (``semantic_segmentation/mmcv_custom/
                layer_decay_optimizer_constructor.py``, also mmseg's): every downsample
                layer id 0, the blocks of stage i id i + 1, the rest ``num_layers + 1``.
            num_layers (int, optional): ``num_layers`` of the ``'stage_wise'`` rule; defaults
                to 12, or 6 when the third stage has at most 9 blocks (the recipe's values
                for the ConvNeXt sizes). ``'group'`` and ``'block'`` derive it from the depths.

        Returns:
            tuple[int, int]: ``(layer_id, total)``; parameters outside the backbone (heads,
            necks) and the output norms get ``total - 1`` (lr scale 1).
        """
        default_num_layers = 12 if self.depths[-2] > 9 else 6
        if decay_type not in self.layer_decay_types:
            raise ValueError(f'Unknown decay_type {decay_type!r}; valid types are '
                             f'{self.layer_decay_types}')
        if num_layers is not None and decay_type != 'stage_wise':
            raise ValueError(f'num_layers={num_layers} applies to decay_type=\'stage_wise\' '
                             f'only; {decay_type!r} derives its layers from the depths')
        if decay_type == 'stage_wise':
            num_layers = default_num_layers if num_layers is None else num_layers
            if num_layers < len(self.depths) - 1:
                # The last stage would get a larger lr than the head.
                raise ValueError(f'stage_wise num_layers must be at least '
                                 f'{len(self.depths) - 1}, got {num_layers}')
            max_layer_id = num_layers
        elif decay_type == 'group':
            max_layer_id = default_num_layers
        else:
            max_layer_id = sum(self.depths)
        outside = (max_layer_id + 1, max_layer_id + 2)
        if not param_name.startswith(prefix):
            return outside
        match = re.match(r'(downsample_layers|stages)\.(\d+)\.(\d+)\.',
                         param_name[len(prefix):])
        if match is None:  # output norms
            return outside
        kind, stage_id, index = match.group(1), int(match.group(2)), int(match.group(3))
        if decay_type == 'stage_wise':
            layer_id = 0 if kind == 'downsample_layers' else stage_id + 1
        elif decay_type == 'block':
            layer_id = sum(self.depths[:stage_id]) + 1
            if kind == 'stages':
                layer_id += index
        elif stage_id == 0:
            layer_id = 0 if kind == 'downsample_layers' else 1
        elif stage_id == len(self.depths) - 1:
            layer_id = max_layer_id
        elif kind == 'stages' and stage_id == 2:
            layer_id = 3 + index // 3
        else:
            layer_id = stage_id + 1
        return layer_id, max_layer_id + 2
