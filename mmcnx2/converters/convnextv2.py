# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Recognise a ConvNeXt V2 checkpoint's format and map it onto mmcnx2's layout.

Sources (see ``../shared/spec/convnextv2.md`` for the official layouts):

- ``official``: the official dense layout (fine-tuned, or the dense "pretrain-only" FCMAE
  release), usually under the key ``model``.
- ``official-fcmae``: the official FCMAE pretraining checkpoint: a MinkowskiEngine sparse
  encoder under ``encoder.`` (``.kernel`` tensors, ``.ln.``/``.linear.`` wrappers, (1, C)
  biases and GRN params) plus a dense decoder (``proj``, ``mask_token``, ``decoder.j``, ``pred``).
- ``timm``: ``timm.create_model('convnextv2_*')`` state dicts.
- ``hf``: HF transformers ``ConvNextV2Model`` / ``ConvNextV2ForImageClassification``.
- ``mmpretrain``: mmpretrain's ConvNeXt-V2 and mmcnx2's own checkpoints (already our layout).

The result is an mmpretrain ``ImageClassifier`` state dict: ``backbone.*`` in the
``ConvNeXtV2`` layout (final norm -> ``backbone.norm{last stage}``), ``head.fc.*`` when the source
has a classifier, and optionally the FCMAE decoder as ``neck.*``. GRN gamma/beta become 1-D.
"""
import argparse
import math
import os
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import torch

StateDict = Dict[str, torch.Tensor]

# Placeholder for the index of the last stage, which names the final norm (``norm3`` for the
# four-stage archs); resolved once all stage keys are known.
LAST = '{last}'
_BLOCK = r'backbone.stages.\1.\2.'
_DECODER = r'neck.decoder.\1.'
# Source block prefixes; groups: stage index, block index.
_OFFICIAL_BLOCK = r'stages\.(\d+)\.(\d+)\.'
_TIMM_BLOCK = r'stages\.(\d+)\.blocks\.(\d+)\.'
_HF = r'(?:convnextv2\.)?'  # absent in a bare ConvNextV2Model
_HF_BLOCK = _HF + r'encoder\.stages\.(\d+)\.layers\.(\d+)\.'

# The parts of a block as (ours, official, timm, HF): a name ending in '.' is a module prefix,
# any other a whole parameter name (timm and HF call GRN's gamma/beta weight/bias). The one
# table behind the rules of both directions (this module's and :mod:`.export`'s).
BLOCK_PARTS = (
    ('depthwise_conv.', 'dwconv.', 'conv_dw.', 'dwconv.'),
    ('norm.', 'norm.', 'norm.', 'layernorm.'),
    ('pointwise_conv1.', 'pwconv1.', 'mlp.fc1.', 'pwconv1.'),
    ('grn.gamma', 'grn.gamma', 'mlp.grn.weight', 'grn.weight'),
    ('grn.beta', 'grn.beta', 'mlp.grn.bias', 'grn.bias'),
    ('pointwise_conv2.', 'pwconv2.', 'mlp.fc2.', 'pwconv2.'),
)
BLOCK_PART_FORMATS = ('official', 'timm', 'hf')


def block_part_rules(fmt: str, source_block: str, target_block: str,
                     to_fmt: bool = False) -> List[Tuple[str, str]]:
    """One (pattern, replacement) per block part, from ``fmt``'s names to ours (or, with
    ``to_fmt``, ours to ``fmt``'s), under the given block prefix pattern and replacement."""
    column = BLOCK_PART_FORMATS.index(fmt) + 1
    rules = []
    for names in BLOCK_PARTS:
        source, target = (names[0], names[column]) if to_fmt else (names[column], names[0])
        anchor = '' if source.endswith('.') else '$'
        rules.append((source_block + re.escape(source) + anchor, target_block + target))
    return rules


# Per format: (pattern matched at the start of a key, replacement of the matched part).
# The first matching rule wins; keys matching none are reported as errors.
RULES: Dict[str, List[Tuple[str, str]]] = {
    'official': [
        (r'downsample_layers\.(\d+)\.(\d+)\.', r'backbone.downsample_layers.\1.\2.'),
        *block_part_rules('official', _OFFICIAL_BLOCK, _BLOCK),
        (r'norm\.', f'backbone.norm{LAST}.'),
        (r'head\.', 'head.fc.'),
        # FCMAE decoder (present in pretraining checkpoints only).
        (r'proj\.', 'neck.proj.'),
        (r'mask_token$', 'neck.mask_token'),
        *block_part_rules('official', r'decoder\.(\d+)\.', _DECODER),
        (r'pred\.', 'neck.pred.'),
    ],
    'timm': [
        (r'stem\.(\d)\.', r'backbone.downsample_layers.0.\1.'),
        (r'stages\.(\d+)\.downsample\.(\d)\.', r'backbone.downsample_layers.\1.\2.'),
        *block_part_rules('timm', _TIMM_BLOCK, _BLOCK),
        (r'head\.norm\.', f'backbone.norm{LAST}.'),
        (r'head\.fc\.', 'head.fc.'),
    ],
    'hf': [
        (_HF + r'embeddings\.patch_embeddings\.', 'backbone.downsample_layers.0.0.'),
        (_HF + r'embeddings\.layernorm\.', 'backbone.downsample_layers.0.1.'),
        (_HF + r'encoder\.stages\.(\d+)\.downsampling_layer\.(\d)\.',
         r'backbone.downsample_layers.\1.\2.'),
        *block_part_rules('hf', _HF_BLOCK, _BLOCK),
        (_HF + r'layernorm\.', f'backbone.norm{LAST}.'),
        (r'classifier\.', 'head.fc.'),
    ],
    'mmpretrain': [
        (r'backbone\.', 'backbone.'),
        (r'head\.fc\.', 'head.fc.'),
        (r'neck\.', 'neck.'),  # an mmcnx2 FCMAE checkpoint's decoder
        # A bare backbone state dict.
        (r'(?=downsample_layers\.|stages\.|norm\d+\.)', 'backbone.'),
    ],
}
RULES['official-fcmae'] = RULES['official']

# One key that only the given format has; checked in this order.
SIGNATURES = (
    ('mmpretrain', r'(backbone\.)?stages\.0\.0\.depthwise_conv\.weight$'),
    ('official-fcmae', r'encoder\.stages\.0\.0\.dwconv\.(kernel|weight)$'),
    ('official', r'stages\.0\.0\.dwconv\.weight$'),
    ('timm', r'stages\.0\.blocks\.0\.conv_dw\.weight$'),
    ('hf', r'(convnextv2\.)?encoder\.stages\.0\.layers\.0\.dwconv\.weight$'),
)
FORMATS = tuple(name for name, _ in SIGNATURES)

GRN_PARAM = re.compile(r'\.grn\.(gamma|beta)$')
POINTWISE_WEIGHT = re.compile(r'\.pointwise_conv[12]\.weight$')
STAGE_KEY = re.compile(r'backbone\.stages\.(\d+)\.')
# Files HF's save_pretrained writes, in order of preference.
HF_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')


def load_source(path: 'str | os.PathLike') -> StateDict:
    """Read the tensors of a checkpoint file (``.safetensors`` or a torch pickle) or of an HF
    model directory, unwrapping ``state_dict`` (mmengine) or ``model`` (official) containers.

    Files are read by mmcnx2's safe loader (``weights_only=True``, see
    :func:`mmcnx2.engine.checkpoint.load_checkpoint_file`); ``argparse.Namespace`` (the
    ``args`` entry of official training checkpoints) is the one class allowed beyond it.

    Raises:
        FileNotFoundError, CorruptCheckpointError, UnsafeCheckpointError: see
            :func:`mmcnx2.engine.checkpoint.load_checkpoint_file`.
        ValueError: the file holds no state dict.
    """
    path = os.fspath(path)
    if osp.isdir(path):
        found = [osp.join(path, f) for f in HF_WEIGHT_FILES if osp.isfile(osp.join(path, f))]
        if not found:
            raise FileNotFoundError(f'{path} is a directory without any of {HF_WEIGHT_FILES}')
        path = found[0]
    from ..engine.checkpoint import load_checkpoint_file
    loaded = load_checkpoint_file(path, map_location='cpu', extra_globals=[argparse.Namespace])
    return unwrap_state_dict(loaded, path)


def unwrap_state_dict(loaded: object, source: str) -> StateDict:
    """The state dict inside a loaded checkpoint: its ``state_dict`` (mmengine) or ``model``
    (official) entry, or the checkpoint itself.

    Raises:
        ValueError: naming ``source``, when the result is no dict of tensors.
    """
    for container in ('state_dict', 'model'):
        if isinstance(loaded, dict) and isinstance(loaded.get(container), dict):
            loaded = loaded[container]
            break
    if not isinstance(loaded, dict):
        raise ValueError(f'{source} holds a {type(loaded).__name__}, not a state dict')
    not_tensors = [k for k, v in loaded.items() if not torch.is_tensor(v)]
    if not_tensors:
        raise ValueError(f'{source}: entries that are not tensors, so this is no state dict: '
                         f'{_sample(not_tensors)}')
    return loaded


def detect_format(state_dict: StateDict) -> str:
    """Name the format of ``state_dict``: one of :data:`FORMATS`.

    Raises:
        ValueError: no format matches; the message shows some of the keys seen.
    """
    for name, signature in SIGNATURES:
        if any(re.match(signature, key) for key in state_dict):
            return name
    raise ValueError(
        'Unrecognised checkpoint format: expected ConvNeXt V2 weights in the official '
        '(fine-tuned or FCMAE), timm, HF transformers or mmpretrain layout, saw '
        f'{len(state_dict)} keys: {_sample(list(state_dict))}')


def convert_state_dict(state_dict: StateDict,
                       keep_decoder: bool = False) -> Tuple[str, 'OrderedDict[str, torch.Tensor]']:
    """Map a ConvNeXt V2 state dict of any supported format onto mmcnx2's layout.

    Args:
        state_dict (dict[str, Tensor]): Source tensors (containers already unwrapped).
        keep_decoder (bool): Keep an FCMAE decoder as ``neck.*`` (mmcnx2's FCMAE neck layout);
            otherwise it is dropped. Defaults to False.

    Returns:
        tuple[str, OrderedDict]: The detected format and the converted state dict.

    Raises:
        ValueError: unrecognised format, or keys with no ConvNeXt V2 counterpart (e.g. the
            layer scale of a ConvNeXt V1 checkpoint).
    """
    fmt = detect_format(state_dict)
    if fmt == 'official-fcmae':
        state_dict = _densify_fcmae(state_dict)
    converted, unmapped = OrderedDict(), []
    for key, value in state_dict.items():
        new_key = _rename(key, RULES[fmt])
        if new_key is None:
            unmapped.append(key)
        elif keep_decoder or not new_key.startswith('neck.'):
            converted[new_key] = _to_our_shape(new_key, value)
    if unmapped:
        raise ValueError(f'{fmt} checkpoint has keys with no ConvNeXt V2 counterpart: '
                         f'{_sample(unmapped)}')
    last = str(max(int(m.group(1)) for m in map(STAGE_KEY.match, converted) if m))
    return fmt, OrderedDict((k.replace(LAST, last), v) for k, v in converted.items())


def convert_checkpoint(src: 'str | os.PathLike',
                       dst: 'str | os.PathLike',
                       keep_decoder: bool = False) -> Tuple[str, 'OrderedDict[str, torch.Tensor]']:
    """Convert the checkpoint at ``src`` and save ``{'state_dict': ..., 'meta': ...}`` to ``dst``.

    Args:
        src (str): Checkpoint file (``.pth``/``.pt``/``.bin``/``.safetensors``) or HF model
            directory.
        dst (str): Output file; missing parent directories are created.
        keep_decoder (bool): See :func:`convert_state_dict`.

    Returns:
        tuple[str, OrderedDict]: The detected format and the saved state dict.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    source = load_source(src)
    try:
        fmt, state_dict = convert_state_dict(source, keep_decoder)
    except ValueError as err:
        raise ValueError(f'{src}: {err}') from err
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    torch.save({'state_dict': state_dict,
                'meta': {'converted_from': fmt, 'source': osp.basename(src)}}, dst)
    return fmt, state_dict


def _to_our_shape(key: str, value: torch.Tensor) -> torch.Tensor:
    # GRN params are (1, 1, 1, C) in the official and HF layouts, (1, C) in the sparse one.
    if GRN_PARAM.search(key):
        return value.reshape(-1)
    # timm's ConvNeXt V2 (conv_mlp=True) runs its MLP as 1x1 convs: (Cout, Cin, 1, 1).
    if POINTWISE_WEIGHT.search(key) and value.dim() == 4:
        return value.flatten(1)
    return value


def _densify_fcmae(state_dict: StateDict) -> StateDict:
    """Rewrite the sparse (MinkowskiEngine) encoder of an official FCMAE checkpoint in the
    official dense layout; the decoder is dense already."""
    dense = {}
    for key, value in state_dict.items():
        if key.startswith('encoder.'):
            key = key[len('encoder.'):].replace('.ln.', '.').replace('.linear.', '.')
            if key.endswith('.kernel'):
                key, value = key[:-len('kernel')] + 'weight', _dense_conv_weight(key, value)
            elif key.endswith('.bias') and value.dim() == 2:  # (1, C) -> (C,)
                value = value.reshape(-1)
        dense[key] = value
    return dense


def _dense_conv_weight(key: str, kernel: torch.Tensor) -> torch.Tensor:
    """MinkowskiEngine kernel -> Conv2d weight (spec formulas):
    (k*k, Cin, Cout) -> (Cout, Cin, k, k); depthwise (k*k, C) -> (C, 1, k, k)."""
    size = math.isqrt(kernel.shape[0])
    if size * size != kernel.shape[0] or kernel.dim() not in (2, 3):
        raise ValueError(f'{key}: sparse kernel of shape {tuple(kernel.shape)} is neither '
                         '(k*k, Cin, Cout) nor depthwise (k*k, C)')
    if kernel.dim() == 3:
        _, in_channels, out_channels = kernel.shape
        weight = kernel.permute(2, 1, 0).reshape(out_channels, in_channels, size, size)
    else:
        weight = kernel.permute(1, 0).reshape(kernel.shape[1], 1, size, size)
    # MinkowskiEngine enumerates kernel offsets with the first spatial axis fastest.
    return weight.transpose(3, 2).contiguous()


def _rename(key: str, rules: Sequence[Tuple[str, str]]) -> Optional[str]:
    for pattern, replacement in rules:
        match = re.match(pattern, key)
        if match:
            return match.expand(replacement) + key[match.end():]
    return None


def _sample(keys: List[str], n: int = 8) -> str:
    more = f' ... (+{len(keys) - n} more)' if len(keys) > n else ''
    return f'{keys[:n]}{more}'
