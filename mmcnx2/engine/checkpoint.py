# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Safe loading of mmengine checkpoints with torch's ``weights_only`` unpickler.

Since torch 2.6 ``torch.load`` only rebuilds tensors, containers and primitive values unless
more globals are allowed. mmengine 0.10.7 checkpoints also hold its ``HistoryBuffer`` (the
logged scalars of the message hub) with NumPy arrays inside, and NumPy scalars (e.g.
``eta`` in the message hub), so ``--resume``, ``load_from`` and ``Pretrained`` from a
training checkpoint fail. Importing :mod:`mmcnx2` allows exactly those globals (measured on
checkpoints of epoch- and iteration-based mmengine runs; ``tests/test_checkpoint_safety.py``
checks each one is needed) and nothing that can run code, so ``weights_only`` stays on.
mmengine's local-file loader is replaced by :func:`load_local_checkpoint`, which forces
``weights_only=True`` and turns a refused pickle into :class:`UnsafeCheckpointError`.
"""
import os.path as osp
import pickle
import re

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader


def _numpy_globals() -> list:
    """What pickles of NumPy arrays and scalars reference.

    Logged values are float64 or int64 (HistoryBuffer arrays, metric scalars); rebuilding a
    dtype needs its class (``numpy.dtypes.Float64DType``). NumPy 2 moved ``numpy.core`` to
    ``numpy._core``; checkpoints written under NumPy 1 name the old module, so the two
    functions are also allowed under their NumPy 1 names.
    """
    core = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    found = [np.ndarray, np.dtype, core._reconstruct, core.scalar,
             type(np.dtype(np.float64)), type(np.dtype(np.int64))]
    if hasattr(np, '_core'):
        found += [(core._reconstruct, 'numpy.core.multiarray._reconstruct'),
                  (core.scalar, 'numpy.core.multiarray.scalar')]
    return found


# HistoryBuffer.__getstate__ stores its statistics methods, which pickle writes as
# ``getattr(HistoryBuffer, 'mean')``. A general getattr would reach any attribute of any
# allowed object (``ndarray.tofile``, a function's ``__globals__``, ...), so ``getattr`` is
# replaced by this function that resolves only those four methods.
_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


def _history_buffer_method(owner, name: str):
    if owner is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'Unsupported global: GLOBAL getattr({owner!r}, {name!r}) was not an allowed global '
        f'(only HistoryBuffer.{{{",".join(_HISTORY_BUFFER_METHODS)}}})')


#: Every global an mmengine checkpoint refers to beyond torch's defaults.
SAFE_GLOBALS = [HistoryBuffer, (_history_buffer_method, 'builtins.getattr')] + _numpy_globals()

# torch's reasons: "Unsupported global: GLOBAL x.y was not an allowed global ...",
# "Trying to load unsupported GLOBAL posix.system whose module posix is blocked."
_DETAIL = re.compile(r'WeightsUnpickler error:\s*(.+)')
_GLOBAL = re.compile(r'GLOBAL (.+?) (?:was not|whose module)')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint needs a Python object outside :data:`SAFE_GLOBALS`; nothing was run."""


def register_safe_globals() -> None:
    """Allow :data:`SAFE_GLOBALS` in ``torch.load(weights_only=True)`` (idempotent)."""
    torch.serialization.add_safe_globals(SAFE_GLOBALS)


@CheckpointLoader.register_scheme(prefixes='', force=True)
def load_local_checkpoint(filename: str, map_location=None):
    """mmengine's loader for local paths, always with ``weights_only=True``.

    Raises:
        FileNotFoundError: ``filename`` does not exist.
        UnsafeCheckpointError: the pickle refers to a global outside :data:`SAFE_GLOBALS`
            (e.g. ``os.system`` in a crafted file); it is refused before anything runs.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'Checkpoint {filename} can not be found.')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if 'Weights only load failed' not in str(e):
            raise
        detail = _DETAIL.search(str(e))
        detail = detail.group(1).strip() if detail else str(e)
        found = _GLOBAL.search(detail)
        reason = f'it refers to `{found.group(1)}`' if found else detail.rstrip('.')
        raise UnsafeCheckpointError(
            f'Refusing to load checkpoint {filename}: {reason}. Only torch types and what '
            'mmengine checkpoints contain (mmcnx2.engine.checkpoint.SAFE_GLOBALS) may be '
            'unpickled; anything else could run arbitrary code, so nothing was loaded. If you '
            'trust the file, re-save its tensors (e.g. the state dict) with torch.save.') from None
