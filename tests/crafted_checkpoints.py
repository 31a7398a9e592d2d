# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Checkpoint files an attacker or an accident produces, for tests/test_checkpoint_safety.py
and tests/test_attacks.py. Each code-running payload would create ``marker`` when run."""
import os
import pickle
from typing import Callable, Dict

import numpy as np
import torch

_CORE = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray


class _RunsCommand:
    """Unpickling calls ``os.system`` (what ``weights_only`` exists to block)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


class _Evaluates:
    """Unpickling calls ``eval`` on source code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').close()", )


class _ReadsGlobals:
    """``getattr`` through the allowed HistoryBuffer global to reach other objects."""

    def __reduce__(self):
        return getattr, (np.ndarray, 'tofile')


class _ObjectDtype:
    def __reduce__(self):
        return np.dtype, ('O8', False, True)


class _ForgedFloat64Dtype:
    """Rebuilds as a float64 dtype carrying an object field, with flags hiding it."""

    def __reduce__(self):
        fields = {'a': (_ObjectDtype(), 0)}
        return np.dtype, ('f8', False, True), (3, '|', None, ('a', ), fields, 8, 1, 0)


class _ForgedArray:
    """An array of that dtype whose object pointer is eight 0x01 bytes from the file."""

    def __reduce__(self):
        return (_CORE._reconstruct, (np.ndarray, (0, ), b'b'),
                (1, (1, ), _ForgedFloat64Dtype(), False, b'\x01' * 8))


def _pickle_dump(obj, path) -> None:
    with open(path, 'wb') as f:
        pickle.dump(obj, f, protocol=2)


def _meta(**extra) -> dict:
    return dict(epoch=1, iter=1, seed=0, **extra)


def _hub(**runtime_info) -> dict:
    return dict(log_scalars={}, runtime_info=runtime_info, resumed_keys={})


def _source_that_touches(marker) -> str:
    return f"x = __import__('os').system('touch {marker}')\n"


#: name -> writer(path, marker): files whose loading must run nothing.
CODE_RUNNING: Dict[str, Callable] = {
    'os.system in a pickle': lambda path, marker: torch.save(
        {'state_dict': {}, 'meta': _RunsCommand(marker)}, path),
    'os.system, legacy pickle': lambda path, marker: torch.save(
        {'state_dict': {}, 'meta': _RunsCommand(marker)}, path,
        _use_new_zipfile_serialization=False),
    'os.system, plain pickle.dump': lambda path, marker: _pickle_dump(
        {'state_dict': {}, 'meta': _RunsCommand(marker)}, path),
    'eval in a pickle': lambda path, marker: torch.save(
        {'state_dict': {}, 'meta': _Evaluates(marker)}, path),
    'getattr beyond HistoryBuffer': lambda path, marker: torch.save(
        {'state_dict': {}, 'x': _ReadsGlobals()}, path),
    # Only allowed types: the code is a string mmengine would parse as a config.
    "meta['config'] (Runner.resume)": lambda path, marker: torch.save(
        {'state_dict': {}, 'meta': _meta(config=_source_that_touches(marker)),
         'message_hub': _hub()}, path),
    "meta['cfg'] (inferencers)": lambda path, marker: torch.save(
        {'state_dict': {}, 'meta': _meta(cfg=_source_that_touches(marker)),
         'message_hub': _hub()}, path),
    "message_hub runtime_info['cfg']": lambda path, marker: torch.save(
        {'state_dict': {}, 'meta': _meta(),
         'message_hub': _hub(cfg=_source_that_touches(marker))}, path),
    'forged NumPy array (object field)': lambda path, marker: torch.save(
        {'state_dict': {}, 'meta': _meta(), 'message_hub': _hub(eta=_ForgedArray())}, path),
    'forged NumPy dtype (object field)': lambda path, marker: torch.save(
        {'state_dict': {}, 'meta': _meta(), 'message_hub': _hub(eta=_ForgedFloat64Dtype())},
        path),
}


def _zip_checkpoint() -> bytes:
    import io
    buffer = io.BytesIO()
    torch.save({'state_dict': {'w': torch.arange(4096.)}, 'meta': _meta()}, buffer)
    return buffer.getvalue()


def _legacy_checkpoint() -> bytes:
    import io
    buffer = io.BytesIO()
    torch.save({'state_dict': {'w': torch.arange(4096.)}, 'meta': _meta()}, buffer,
               _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def _safetensors() -> bytes:
    from safetensors.torch import save
    return save({'w': torch.arange(4096.)})


#: name -> (file suffix, content): damaged or foreign files that must be named as corrupt.
CORRUPT: Dict[str, tuple] = {
    'zero bytes': ('.pth', lambda: b''),
    'random bytes': ('.pth', lambda: np.random.default_rng(0).bytes(4096)),
    'a text file': ('.pth', lambda: b'not a checkpoint\n'),
    'truncated zip checkpoint': ('.pth', lambda: _zip_checkpoint()[:5000]),
    'zip checkpoint cut at 30 bytes': ('.pth', lambda: _zip_checkpoint()[:30]),
    'truncated legacy checkpoint': ('.pth', lambda: _legacy_checkpoint()[:5000]),
    'truncated safetensors': ('.safetensors', lambda: _safetensors()[:100]),
    'safetensors with a bad header': ('.safetensors',
                                      lambda: b'\xff' * 8 + _safetensors()[8:]),
}


def write_corrupt(directory, name: str) -> str:
    suffix, content = CORRUPT[name]
    path = os.path.join(str(directory), name.replace(' ', '_') + suffix)
    with open(path, 'wb') as f:
        f.write(content())
    return path
