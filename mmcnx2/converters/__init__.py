# Copyright (c) mmcnx2 contributors. All rights reserved.
from .convnextv2 import (FORMATS, convert_checkpoint, convert_state_dict, detect_format,
                         load_source)

__all__ = ['FORMATS', 'convert_checkpoint', 'convert_state_dict', 'detect_format', 'load_source']
