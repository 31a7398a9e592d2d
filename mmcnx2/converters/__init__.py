# Copyright (c) mmcnx2 contributors. All rights reserved.
from .convnextv2 import (FORMATS, convert_checkpoint, convert_state_dict, detect_format,
                         load_source, unwrap_state_dict)
from .export import EXPORT_FORMATS, describe_arch, export_state_dict, group_keys, save_hf
# Registers mmengine's loader for the official URLs (importing mmcnx2 imports this package).
from .loading import (OFFICIAL_URL_PREFIX, CheckpointDownloadError, download_checkpoint,
                      load_converted_state_dict, load_pretrained_model, resolve_checkpoint)

__all__ = [
    'EXPORT_FORMATS', 'FORMATS', 'OFFICIAL_URL_PREFIX', 'CheckpointDownloadError',
    'convert_checkpoint', 'convert_state_dict', 'describe_arch', 'detect_format',
    'download_checkpoint', 'export_state_dict', 'group_keys', 'load_converted_state_dict',
    'load_pretrained_model', 'load_source', 'resolve_checkpoint', 'save_hf', 'unwrap_state_dict'
]
