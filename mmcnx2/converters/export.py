# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Write an mmcnx2 ConvNeXt V2 state dict in timm's or HF transformers' layout.

The inverse of :mod:`mmcnx2.converters.convnextv2`: a backbone trained here (a classifier,
detector or segmentor checkpoint; its ``backbone.*`` tensors) loads strictly into
``timm.create_model('convnextv2_<arch>')`` or HF ``ConvNextV2ForImageClassification`` /
``ConvNextV2Model``. The final norm of a classifier (``backbone.norm{last}``) becomes timm's
``head.norm`` / HF's ``layernorm``; the per-stage output norms of a dense-prediction backbone
other than the last, and an FCMAE decoder, have no counterpart and are reported as dropped.
An FCMAE encoder has no final norm: timm's ``head.norm`` / HF's ``layernorm`` are then
missing (left as initialised by a non-strict load).
"""
import json
import os
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

from .convnextv2 import LAST, StateDict, _rename, _sample, block_part_rules

# timm builds the MLP of these sizes from 1x1 convs (``conv_mlp=True``): weights (Cout, Cin, 1, 1).
TIMM_CONV_MLP_ARCHS = ('atto', 'femto', 'pico', 'nano')
_OUR_BLOCK = r'backbone\.stages\.(\d+)\.(\d+)\.'

# Per format: (pattern matched at the start of one of our keys, replacement). Keys matching
# none are dropped and reported.
EXPORT_RULES: Dict[str, List[Tuple[str, str]]] = {
    'timm': [
        (r'backbone\.downsample_layers\.0\.(\d)\.', r'stem.\1.'),
        (r'backbone\.downsample_layers\.(\d+)\.(\d)\.', r'stages.\1.downsample.\2.'),
        *block_part_rules('timm', _OUR_BLOCK, r'stages.\1.blocks.\2.', to_fmt=True),
        (rf'backbone\.norm{LAST}\.', 'head.norm.'),
        (r'head\.fc\.', 'head.fc.'),
    ],
    'hf': [
        (r'backbone\.downsample_layers\.0\.0\.', 'embeddings.patch_embeddings.'),
        (r'backbone\.downsample_layers\.0\.1\.', 'embeddings.layernorm.'),
        (r'backbone\.downsample_layers\.(\d+)\.(\d)\.',
         r'encoder.stages.\1.downsampling_layer.\2.'),
        *block_part_rules('hf', _OUR_BLOCK, r'encoder.stages.\1.layers.\2.', to_fmt=True),
        (rf'backbone\.norm{LAST}\.', 'layernorm.'),
        (r'head\.fc\.', 'classifier.'),
    ],
}
EXPORT_FORMATS = tuple(EXPORT_RULES)


def describe_arch(state_dict: StateDict) -> Dict[str, object]:
    """Depths, channels, number of classes and arch name of an mmcnx2 state dict.

    Returns:
        dict: ``depths`` and ``channels`` (lists), ``num_classes`` (0 without a classifier) and
        ``arch`` (the name in ``ConvNeXtV2.arch_settings``, or None for a custom arch).

    Raises:
        ValueError: no ``backbone.`` ConvNeXtV2 tensors in ``state_dict``.
    """
    from ..models.backbones import ConvNeXtV2
    blocks: Dict[int, set] = {}
    for key in state_dict:
        match = re.match(_OUR_BLOCK, key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    if not blocks:
        raise ValueError('No ConvNeXtV2 blocks (backbone.stages.S.B.*) in the state dict; saw '
                         f'{_sample(list(state_dict))}')
    stages = range(max(blocks) + 1)
    depths = [len(blocks.get(s, ())) for s in stages]
    channels = [state_dict[f'backbone.stages.{s}.0.depthwise_conv.weight'].shape[0]
                for s in stages]
    arch = next((name for name, setting in ConvNeXtV2.arch_settings.items()
                 if setting == dict(depths=depths, channels=channels)), None)
    head = state_dict.get('head.fc.weight')
    return dict(depths=depths, channels=channels, arch=arch,
                num_classes=0 if head is None else head.shape[0])


def export_state_dict(state_dict: StateDict, fmt: str,
                      conv_mlp: Optional[bool] = None) -> Tuple['OrderedDict', List[str]]:
    """Map an mmcnx2 state dict (``backbone.*``, optional ``head.fc.*``) onto ``fmt``.

    Args:
        state_dict (dict[str, Tensor]): mmcnx2 layout, as saved by a runner (``state_dict``
            entry) or returned by :func:`mmcnx2.converters.convert_state_dict`.
        fmt (str): ``'timm'`` or ``'hf'``.
        conv_mlp (bool, optional): timm only: write the MLP weights as 1x1 convs. Defaults to
            timm's choice for the arch (True for atto, femto, pico and nano).

    Returns:
        tuple[OrderedDict, list[str]]: The exported tensors (HF: the keys of a bare
        ``ConvNextV2Model``; prefix them with ``convnextv2.`` for the classifier, which
        :func:`save_hf` does) and the source keys that have no counterpart (dropped).

    Raises:
        ValueError: unknown ``fmt``, or no ConvNeXtV2 backbone in ``state_dict``.
    """
    if fmt not in EXPORT_RULES:
        raise ValueError(f'Unknown export format {fmt!r}; choose one of {EXPORT_FORMATS}')
    arch = describe_arch(state_dict)
    if conv_mlp is None:
        conv_mlp = arch['arch'] in TIMM_CONV_MLP_ARCHS
    last = str(len(arch['depths']) - 1)
    rules = [(pattern.replace(LAST, last), repl) for pattern, repl in EXPORT_RULES[fmt]]
    exported, dropped = OrderedDict(), []
    for key, value in state_dict.items():
        new_key = _rename(key, rules)
        if new_key is None:
            dropped.append(key)
            continue
        if fmt == 'hf' and new_key.endswith(('grn.weight', 'grn.bias')):
            value = value.reshape(1, 1, 1, -1)  # HF keeps GRN params channels-last 4-D
        elif fmt == 'timm' and conv_mlp and re.search(r'\.mlp\.fc\d\.weight$', new_key):
            value = value.reshape(*value.shape, 1, 1)
        exported[new_key] = value
    return exported, dropped


def group_keys(keys: List[str]) -> List[str]:
    """The modules ``keys`` belong to, for messages: top-level modules (``neck``,
    ``rpn_head``) and our output norms (``backbone.norm0``)."""
    return sorted({k.rsplit('.', 1)[0] if k.startswith('backbone.norm') else k.split('.', 1)[0]
                   for k in keys})


def hf_config(state_dict: StateDict) -> Dict[str, object]:
    """The ``config.json`` of HF's ConvNextV2 for an mmcnx2 state dict."""
    arch = describe_arch(state_dict)
    config = dict(
        model_type='convnextv2',
        architectures=['ConvNextV2ForImageClassification' if arch['num_classes']
                       else 'ConvNextV2Model'],
        num_channels=state_dict['backbone.downsample_layers.0.0.weight'].shape[1],
        patch_size=4,
        num_stages=len(arch['depths']),
        depths=arch['depths'],
        hidden_sizes=arch['channels'],
        hidden_act='gelu',
        drop_path_rate=0.0,
        # HF's final LayerNorm defaults to 1e-12; every ConvNeXt V2 norm uses 1e-6.
        layer_norm_eps=1e-6,
        initializer_range=0.02)
    if arch['num_classes']:
        config['id2label'] = {str(i): f'LABEL_{i}' for i in range(arch['num_classes'])}
        config['label2id'] = {f'LABEL_{i}': i for i in range(arch['num_classes'])}
    return config


def save_hf(state_dict: StateDict, out_dir: 'str | os.PathLike') -> Tuple[str, List[str]]:
    """Write ``config.json`` and ``model.safetensors`` that HF's ``from_pretrained`` loads.

    A state dict with a classifier becomes ``ConvNextV2ForImageClassification`` (keys under
    ``convnextv2.``, head ``classifier.``), one without becomes ``ConvNextV2Model``.

    Returns:
        tuple[str, list[str]]: The HF class name and the dropped source keys.
    """
    from safetensors.torch import save_file
    exported, dropped = export_state_dict(state_dict, 'hf')
    config = hf_config(state_dict)
    if 'classifier.weight' in exported:
        exported = OrderedDict((k if k.startswith('classifier.') else 'convnextv2.' + k, v)
                               for k, v in exported.items())
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    with open(osp.join(out_dir, 'config.json'), 'w') as f:
        json.dump(config, f, indent=2)
    save_file({k: v.contiguous() for k, v in exported.items()},
              osp.join(out_dir, 'model.safetensors'), metadata={'format': 'pt'})
    return config['architectures'][0], dropped
