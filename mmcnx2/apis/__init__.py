# Copyright (c) mmcnx2 contributors. All rights reserved.
from .model_zoo import (ModelInfo, find_model, get_model, list_models, model_index_path,
                        register_in_mmpretrain)

__all__ = [
    'ModelInfo', 'find_model', 'get_model', 'list_models', 'model_index_path',
    'register_in_mmpretrain'
]
