# Copyright (c) mmcnx2 contributors. All rights reserved.
"""Checkpoints that a SIGKILL, a full disk or a forgotten ``--resume`` cannot lose."""
import os
import os.path as osp
import re
import uuid
from typing import List

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, get_file_backend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

from ..checkpoint import TRAINING_CHECKPOINT, NoValidCheckpointError, find_resume_checkpoint

#: Name of :class:`AtomicLocalBackend` in mmengine's file backends.
ATOMIC_BACKEND = 'mmcnx2_atomic_local'
# Temporary files of atomic_write: hidden, so no `*.pth` pattern matches a partial file.
_TEMPORARY = re.compile(r'^\..+\.[0-9a-f]{32}\.tmp$')


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` holds either its old content or all of
    ``data``, never part of it: a temporary file next to it is written, flushed to disk and
    renamed over ``path`` (``os.replace`` is atomic on POSIX and Windows).

    Raises:
        OSError: naming ``path`` (e.g. ``[Errno 28] No space left on device``); the
            temporary file is removed and ``path`` is unchanged.
    """
    directory, name = osp.split(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temporary = osp.join(directory, f'.{name}.{uuid.uuid4().hex}.tmp')
    try:
        # 0o666 & ~umask, as open(path, 'wb') would create it.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as err:
        if osp.exists(temporary):
            os.remove(temporary)
        if isinstance(err, OSError):
            raise OSError(err.errno, f'could not write {path} ({err.strerror or err}); nothing '
                          'was left behind and the previous file, if any, is unchanged',
                          path) from err
        raise
    _sync_directory(directory)


def _sync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes are atomic (see :func:`atomic_write`)."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(os.fspath(filepath), obj)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(os.fspath(filepath), obj.encode(encoding))


register_backend(ATOMIC_BACKEND, AtomicLocalBackend)


class _RemovalsDeferred:
    """A file backend that records ``remove``/``rmtree`` instead of doing them."""

    def __init__(self, backend):
        self._backend, self.paths = backend, []

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def remove(self, path) -> None:
        self.paths.append(path)

    rmtree = remove


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` whose saves cannot lose a run.

    Same arguments as :class:`mmengine.hooks.CheckpointHook`. Differences, for a local
    ``out_dir`` (other storage is written as mmengine writes it):

    - Every checkpoint, best checkpoint and ``last_checkpoint`` is written whole or not at
      all (:class:`AtomicLocalBackend`: temporary file, then rename). A SIGKILL during a
      save leaves the previous files as they were; a failed write (e.g. a full disk) raises
      an ``OSError`` naming the file and leaves nothing partial behind.
    - Checkpoints that fall out of ``max_keep_ckpts``, and the previous best one, are
      removed only after the new checkpoint and ``last_checkpoint`` are complete (mmengine
      removes them first, so a kill during the save can leave no checkpoint at all).
    - Before training it says when ``out_dir`` holds checkpoints of a run this one does not
      resume (same-named ones are overwritten), and refuses ``resume=True`` that resumed
      nothing although checkpoints are there (mmengine then silently starts from iteration
      1, e.g. when ``last_checkpoint`` is missing), naming the newest valid one.

    Registered in mmengine's root ``HOOKS``: ``default_hooks =
    dict(checkpoint=dict(type='AtomicCheckpointHook', ...))`` works in every scope.
    """

    def before_train(self, runner) -> None:
        local = self.file_client_args is None and self.backend_args is None and isinstance(
            get_file_backend(self.out_dir or runner.work_dir), LocalBackend)
        if local:
            self.backend_args = dict(backend=ATOMIC_BACKEND)
        super().before_train(runner)
        if local:
            self._check_earlier_run(runner)
            self._remove_partial_files(runner)

    def _check_earlier_run(self, runner) -> None:
        existing = sorted(f for f in os.listdir(self.out_dir) if TRAINING_CHECKPOINT.match(f)
                          ) if osp.isdir(self.out_dir) else []
        resumed = runner.iter > 0 or runner.epoch > 0
        if not existing or resumed:
            return
        if getattr(runner, '_resume', False):  # mmengine keeps `resume` only privately
            try:
                found, why = find_resume_checkpoint(self.out_dir)
                why += (f' Pass it explicitly: --resume {found} (mmcnx2\'s tools/train.py '
                        '--resume finds it itself).')
            except NoValidCheckpointError as err:
                why = str(err)
            raise RuntimeError(
                f'resume was requested but nothing was resumed, although {self.out_dir} holds '
                f'{", ".join(existing)}; starting over would overwrite them. {why}')
        if is_main_process():
            runner.logger.warning(
                f'{self.out_dir} holds checkpoints of an earlier run ({", ".join(existing)}) '
                'and this run does not resume it: checkpoints of the same name will be '
                'overwritten. To continue that run use --resume; to keep it, use another '
                '--work-dir.')

    def _remove_partial_files(self, runner) -> None:
        """Temporary files of saves that were killed midway."""
        if not is_main_process():
            return
        for name in os.listdir(self.out_dir):
            if _TEMPORARY.match(name):
                os.remove(osp.join(self.out_dir, name))
                runner.logger.info(f'Removed {name}, the unfinished save of a killed run.')

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        outdated = self._keep(runner, step)
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        marker = osp.join(runner.work_dir, 'last_checkpoint')
        if self.backend_args == dict(backend=ATOMIC_BACKEND):
            atomic_write(marker, self.last_ckpt.encode())
        else:
            with open(marker, 'w') as f:
                f.write(self.last_ckpt)
        for old_step in outdated:
            self._remove(
                self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old_step)))

    def _keep(self, runner, step) -> List[int]:
        """Record ``step`` among the kept checkpoints; returns the steps that fall out of
        ``max_keep_ckpts`` (as mmengine's hook, which removes them right away)."""
        if self.max_keep_ckpts <= 0 or (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            return []
        outdated = []
        if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
            outdated.append(self.keep_ckpt_ids.popleft())
        self.keep_ckpt_ids.append(step)
        runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        return outdated if is_main_process() else []

    def _remove(self, path: str) -> None:
        if self.file_backend.isfile(path):
            self.file_backend.remove(path)
        elif self.file_backend.isdir(path):  # checkpoints saved by DeepSpeed are directories
            self.file_backend.rmtree(path)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """mmengine's, with the previous best checkpoint removed after the new one is saved."""
        backend = self.file_backend
        self.file_backend = deferred = _RemovalsDeferred(backend)
        try:
            super()._save_best_checkpoint(runner, metrics)
        finally:
            self.file_backend = backend
        for path in deferred.paths:
            self._remove(path)
