# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Safe checkpoint loading: nothing in a file runs, is parsed as a config, or is read blindly.

torch>=2.6 unpickles with ``weights_only=True``: tensors, containers and primitive values.
mmengine checkpoints also hold its ``HistoryBuffer`` (the logged scalars of the message hub)
with NumPy arrays inside, and NumPy scalars, so :func:`load_checkpoint_file` allows exactly
those globals (:data:`SAFE_GLOBALS`) for the duration of one load, never process-wide, and
then refuses what those NumPy globals could forge: a dtype with object fields or an array
that is not plain numbers (reading such a field dereferences a pointer taken from the file).
An empty, truncated or foreign file is named as corrupt (:class:`CorruptCheckpointError`); a
pickle that needs any other Python object as unsafe (:class:`UnsafeCheckpointError`).

The one process-wide change is :func:`install_safe_checkpoint_loading`: mmengine's loader for
local paths (``load_from``, ``resume``, ``Pretrained``) becomes :func:`load_local_checkpoint`,
which also drops the config source texts a checkpoint carries, since mmengine parses them as
Python (``Runner.resume`` parses ``meta['config']``, its inferencers ``meta['cfg']``). It is
installed by tools/train.py and tools/test.py and by importing
:mod:`mmcnx2.engine.safe_checkpoint_loading` (the configs' ``custom_imports``); importing
:mod:`mmcnx2` alone changes nothing. torch's documented escape hatch
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is honoured: both loaders then behave as plain
torch/mmengine (full unpickling) and say so in a warning for every file.
"""
import logging
import os
import os.path as osp
import pickle
import re
import warnings
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner.checkpoint import CheckpointLoader, load_from_local


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
# "Trying to load unsupported GLOBAL posix.system whose module posix is blocked.",
# "Can only build Tensor, Parameter, OrderedDict or types allowlisted ...".
_DETAIL = re.compile(r'WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)', re.S)
_GLOBAL = re.compile(r'GLOBAL (.+?) (?:was not|whose module)')
_NEEDS_AN_OBJECT = re.compile(r'GLOBAL|allowlisted')
# What torch.load reads first: a zip archive (torch>=1.6) or a pickle (protocol >= 2).
_ZIP_MAGIC, _PICKLE_PROTO = b'PK\x03\x04', 0x80
# RuntimeErrors of torch.load that are about map_location, not the file.
_NOT_ABOUT_THE_FILE = re.compile(r'CUDA|deserialize object on')
# torch's spelling of a set environment flag.
_TRUE = ('1', 'y', 'yes', 'true')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint needs a Python object outside :data:`SAFE_GLOBALS`, or holds a NumPy
    value that is not plain numbers; it was refused and nothing in it was used."""


class CorruptCheckpointError(ValueError):
    """A checkpoint file is empty, truncated, damaged or no checkpoint at all."""


class NoValidCheckpointError(RuntimeError):
    """``--resume`` found training checkpoints, but none that can be resumed from."""


def unrestricted_loading_forced() -> bool:
    """Whether torch's escape hatch ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set (and its
    opposite ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` is not), as ``torch.load`` reads them."""
    return (os.getenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '0') in _TRUE
            and os.getenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '0') not in _TRUE)


class UnrestrictedLoadWarning(UserWarning):
    """A checkpoint is unpickled without restrictions (torch's escape hatch is set)."""


def _warn_unrestricted(path: str) -> None:
    warnings.warn(
        f'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set: {path} is unpickled without restrictions, '
        'as plain torch and mmengine do; a crafted file can run code. Unset it to load with '
        "mmcnx2's checks.", UnrestrictedLoadWarning, stacklevel=3)


def load_checkpoint_file(path: 'str | os.PathLike',
                         map_location=None,
                         extra_globals: Sequence = ()):
    """Read a local checkpoint: a torch file (zip or legacy pickle) or ``.safetensors``.

    Args:
        path (str | PathLike): The file.
        map_location: As for ``torch.load`` (a device for ``.safetensors``; other forms
            read it on the CPU).
        extra_globals (Sequence): Further classes the caller trusts in this file, e.g.
            ``argparse.Namespace`` (the ``args`` of official training checkpoints). The
            NumPy checks still apply to everything loaded.

    Returns:
        What the file holds: for mmengine checkpoints a dict with ``meta``, ``state_dict``,
        ``message_hub``, ...; for ``.safetensors`` a dict of tensors.

    Raises:
        FileNotFoundError: No file at ``path``.
        CorruptCheckpointError: The file is empty, truncated, damaged or no checkpoint;
            the message names it, its size and what was found.
        UnsafeCheckpointError: The pickle refers to a global outside :data:`SAFE_GLOBALS`
            (e.g. ``os.system``) or holds a forged NumPy dtype/array; refused before
            anything ran or was read.
    """
    path = osp.expanduser(os.fspath(path))
    if not osp.isfile(path):
        raise FileNotFoundError(f'Checkpoint {path} can not be found.')
    if osp.getsize(path) == 0:
        raise CorruptCheckpointError(
            f'Checkpoint {path} is empty (0 bytes): its save was interrupted or the copy '
            'failed. Nothing was loaded; use an intact copy (e.g. an older checkpoint).')
    if path.endswith('.safetensors'):
        return _load_safetensors(path, map_location)
    if unrestricted_loading_forced():
        _warn_unrestricted(path)
        return _read(path, lambda: torch.load(path, map_location=map_location))
    with torch.serialization.safe_globals([*SAFE_GLOBALS, *extra_globals]):
        loaded = _read(
            path, lambda: torch.load(path, map_location=map_location, weights_only=True))
    refuse_forged_numpy(loaded, path)
    return loaded


def _load_safetensors(path: str, map_location):
    from safetensors.torch import load_file
    device = map_location if isinstance(map_location, (str, torch.device)) else 'cpu'
    try:
        return load_file(path, device=str(device))
    except Exception as err:  # safetensors raises its own SafetensorError, or OSError
        raise CorruptCheckpointError(
            f'Checkpoint {path} ({osp.getsize(path)} bytes) is not a valid .safetensors '
            f'file: {type(err).__name__}: {err}. Nothing was loaded.') from None


def _read(path: str, load):
    """``load()``, with what goes wrong named: unsafe pickle or corrupt file."""
    try:
        return load()
    except (PermissionError, IsADirectoryError, MemoryError):
        raise
    except pickle.UnpicklingError as err:
        if 'Weights only load failed' in str(err):
            detail = _DETAIL.search(str(err))
            detail = detail.group(1).strip() if detail else str(err)
            if _NEEDS_AN_OBJECT.search(detail):
                raise _unsafe(path, detail) from None
            raise _corrupt(path, detail) from None
        raise _corrupt(path, f'{type(err).__name__}: {err}') from None
    except RuntimeError as err:
        if _NOT_ABOUT_THE_FILE.search(str(err)):
            raise
        raise _corrupt(path, f'{type(err).__name__}: {err}') from None
    except Exception as err:  # EOFError, OSError from the zip reader, KeyError, ...
        raise _corrupt(path, f'{type(err).__name__}: {err}') from None


def _unsafe(path: str, detail: str) -> UnsafeCheckpointError:
    found = _GLOBAL.search(detail)
    reason = f'it refers to `{found.group(1)}`' if found else detail.rstrip('.')
    return UnsafeCheckpointError(
        f'Refusing to load checkpoint {path}: {reason}. Only torch types and what '
        'mmengine checkpoints contain (mmcnx2.engine.checkpoint.SAFE_GLOBALS) may be '
        'unpickled; anything else could run arbitrary code, so nothing was loaded. If you '
        'trust the file, re-save its tensors (e.g. the state dict) with torch.save, or load '
        "it with torch's escape hatch TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1.")


def _corrupt(path: str, detail: str) -> CorruptCheckpointError:
    with open(path, 'rb') as f:
        head = f.read(4)
    if head == _ZIP_MAGIC:
        kind = 'a zip-format torch checkpoint that is truncated or damaged'
    elif head[:1] == bytes([_PICKLE_PROTO]):
        kind = 'a pickled torch checkpoint that is truncated or damaged'
    else:
        kind = 'not a torch checkpoint (neither a zip archive nor a pickle)'
    detail = detail.splitlines()[0][:200] if detail else ''
    return CorruptCheckpointError(
        f'Checkpoint {path} is corrupt: {kind} ({osp.getsize(path)} bytes; {detail}). '
        'Nothing was loaded; use an intact copy (e.g. an older checkpoint next to it).')


def _dtype_problem(dtype) -> str:
    """'' for the dtype of a plain number, else what is wrong with it.

    The allowed globals can rebuild a dtype and give it any state, e.g. a float64 dtype with
    an object field and flags that hide it (``hasobject`` False); so the fields, sub-arrays,
    kind and layout are all compared with the plain dtype of the same name.
    """
    if not isinstance(dtype, np.dtype):
        return f'a {type(dtype).__name__} where a dtype belongs'
    if dtype.names is not None or dtype.fields is not None or dtype.subdtype is not None:
        return 'a structured dtype (fields can hold object pointers)'
    if dtype.kind not in 'biufc':
        return f'dtype {dtype.str!r}, not a plain number'
    plain = np.dtype(dtype.str)
    layout = (dtype.itemsize, dtype.alignment, dtype.flags, dtype.hasobject)
    if layout != (plain.itemsize, plain.alignment, plain.flags, plain.hasobject):
        return f'a {dtype.str} dtype whose layout was altered'
    return ''


def refuse_forged_numpy(loaded, path: str) -> None:
    """Raise :class:`UnsafeCheckpointError` if anything in ``loaded`` (containers, object
    attributes, tensor attributes) is a NumPy array, scalar or dtype that is not a plain
    number. Only dtypes are inspected, never the values behind them."""
    stack: List[Tuple[object, str]] = [(loaded, '')]
    seen = set()
    while stack:
        obj, where = stack.pop()
        if isinstance(obj, (np.ndarray, np.generic, np.dtype)):  # before float: np.float64
            problem = _dtype_problem(obj if isinstance(obj, np.dtype) else obj.dtype)
            if problem:
                raise UnsafeCheckpointError(
                    f'Refusing to load checkpoint {path}: {where or "its content"} is a NumPy '
                    f'{type(obj).__name__} with {problem}. mmengine checkpoints hold only '
                    'plain numeric arrays and scalars; nothing of this file was used.')
            continue
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, type(None), type)):
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            stack += [(v, f'{where}.{k}' if where else str(k)) for k, v in obj.items()]
            stack += [(k, f'{where} (a key)') for k in obj]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack += [(v, f'{where}[{i}]') for i, v in enumerate(obj)]
        if hasattr(obj, '__dict__'):  # HistoryBuffer, tensors (pickled attributes), ...
            stack += [(v, f'{where}.{k}') for k, v in vars(obj).items()]


def drop_config_texts(checkpoint, path: str) -> None:
    """Remove the config source texts a loaded checkpoint carries, in place: ``meta['config']``,
    ``meta['cfg']`` and ``message_hub['runtime_info']['cfg']``.

    mmengine 0.10's ``Runner.resume`` parses ``meta['config']`` (which mmengine itself no
    longer writes) to compare GPU counts, and ``BaseInferencer`` without a config parses
    ``meta['cfg']``; parsing a config executes it. Nothing else reads them.
    """
    if not isinstance(checkpoint, dict):
        return
    meta = checkpoint.get('meta')
    if isinstance(meta, dict):
        if 'config' in meta:
            print_log(f"Ignored meta['config'] of {path}: config text in a checkpoint is never "
                      'parsed (it would run as Python).', logger='current', level=logging.WARNING)
        meta.pop('config', None)
        meta.pop('cfg', None)
    hub = checkpoint.get('message_hub')
    runtime = hub.get('runtime_info') if isinstance(hub, dict) else None
    if isinstance(runtime, dict):
        runtime.pop('cfg', None)


def load_local_checkpoint(filename: str, map_location=None):
    """mmengine's loader for local paths once :func:`install_safe_checkpoint_loading` ran.

    :func:`load_checkpoint_file`, then :func:`drop_config_texts`. Under
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``: mmengine's own loader, with a warning.

    Raises:
        FileNotFoundError, CorruptCheckpointError, UnsafeCheckpointError: see
            :func:`load_checkpoint_file`.
    """
    if unrestricted_loading_forced():
        _warn_unrestricted(filename)
        return load_from_local(filename, map_location)
    checkpoint = load_checkpoint_file(filename, map_location)
    drop_config_texts(checkpoint, filename)
    return checkpoint


def install_safe_checkpoint_loading() -> None:
    """Make :func:`load_local_checkpoint` mmengine's loader for local paths (idempotent).

    mmengine's ``CheckpointLoader`` picks a loader by path prefix; local paths have the empty
    prefix. Its other loaders (http, ``open-mmlab://``, ...) are left as they are.
    """
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)


# --- which checkpoint to resume from ---------------------------------------------------

#: The names mmengine's CheckpointHook gives training checkpoints.
TRAINING_CHECKPOINT = re.compile(r'^(?:epoch|iter)_(\d+)\.pth$')


def nonfinite_tensors(tree, prefix: str = '') -> List[str]:
    """Names of the floating-point tensors in a nested dict/list that hold NaN or Inf."""
    if torch.is_tensor(tree):
        return [prefix] if tree.is_floating_point() and not torch.isfinite(tree).all() else []
    if isinstance(tree, dict):
        items: Iterable = tree.items()
    elif isinstance(tree, (list, tuple)):
        items = enumerate(tree)
    else:
        return []
    return [name for key, value in items
            for name in nonfinite_tensors(value, f'{prefix}.{key}' if prefix else str(key))]


def training_checkpoint_problem(path: str) -> str:
    """'' when ``path`` is a complete mmengine training checkpoint with finite weights,
    else what is wrong with it (one line)."""
    try:
        checkpoint = load_checkpoint_file(path, map_location='cpu')
    except (OSError, CorruptCheckpointError, UnsafeCheckpointError) as err:
        return str(err)
    if not (isinstance(checkpoint, dict) and {'meta', 'state_dict'} <= set(checkpoint)):
        return 'not an mmengine training checkpoint (no meta and state_dict)'
    bad = nonfinite_tensors(checkpoint['state_dict'])
    if bad:
        return f'non-finite weights in {len(bad)} tensors (e.g. {bad[0]})'
    return ''


def _training_checkpoints(directory: str) -> List[str]:
    """The ``epoch_*.pth`` / ``iter_*.pth`` files in ``directory`` (absolute paths, as
    mmengine writes them into ``last_checkpoint``)."""
    if not osp.isdir(directory):
        return []
    return [osp.abspath(osp.join(directory, f)) for f in os.listdir(directory)
            if TRAINING_CHECKPOINT.match(f)]


def find_resume_checkpoint(work_dir: str) -> Tuple[Optional[str], str]:
    """The checkpoint ``--resume`` continues from, and a sentence for the log saying why.

    The newest (last written) valid training checkpoint (see
    :func:`training_checkpoint_problem`) among the ``epoch_*.pth`` / ``iter_*.pth`` files of
    ``work_dir``, the file ``work_dir/last_checkpoint`` names and its folder. Normally that
    is the file ``last_checkpoint`` names; mmengine alone uses only that file, so it starts
    from scratch when ``last_checkpoint`` is missing and fails when it names a damaged file.

    Returns:
        tuple: ``(path, why)``; ``(None, why)`` when there is no training checkpoint.

    Raises:
        NoValidCheckpointError: there are training checkpoints, but none is valid; says
            what is wrong with each.
    """
    marker = osp.join(work_dir, 'last_checkpoint')
    named = ''
    if osp.isfile(marker):
        with open(marker) as f:
            named = f.read().strip()
        named = named and osp.abspath(named)
    candidates = set(_training_checkpoints(work_dir))
    if named and osp.isfile(named):
        candidates |= {named, *_training_checkpoints(osp.dirname(named))}
    skipped = {}
    for path in sorted(candidates, key=_newest_first):
        problem = training_checkpoint_problem(path)
        if problem:
            skipped[path] = problem
            continue
        if path == named:
            return path, f'Resuming from {path}, the newest valid checkpoint ({marker} names it).'
        return path, (f'Resuming from {path}, the newest valid checkpoint in {work_dir} '
                      f'({_about(marker, named, skipped)}'
                      + ''.join(f'; skipped {osp.basename(p)}: {why}'
                                for p, why in skipped.items() if p != named) + ').')
    if candidates or named:
        raise NoValidCheckpointError(
            f'Nothing valid to resume in {work_dir} ({_about(marker, named, skipped)}'
            + ''.join(f'; {osp.basename(p)}: {why}' for p, why in skipped.items() if p != named)
            + ').')
    return None, f'Nothing to resume in {work_dir} (no epoch_*.pth or iter_*.pth there).'


def _newest_first(path: str):
    name = TRAINING_CHECKPOINT.match(osp.basename(path))
    return -os.stat(path).st_mtime_ns, -int(name[1]) if name else 0


def _about(marker: str, named: str, problems: dict) -> str:
    """What ``last_checkpoint`` says, for the log."""
    if not osp.isfile(marker):
        return f'{marker} is missing'
    if not named:
        return f'{marker} is empty'
    if named in problems:
        return f'{marker} names {named}, which is unusable: {problems[named]}'
    if not osp.isfile(named):
        return f'{marker} names {named!r}, which does not exist'
    return f'{marker} names {named}, an older one'
