"""Training that fails safe (:func:`usmtl.training.fit.fit` and the training loops of
:mod:`usmtl.training.loop` and :mod:`usmtl.training.jax_loop`): stop signals, the guard
against non-finite losses, files written whole or not at all, and the backup to resume from.

- :class:`StopSignals`: the first SIGINT or SIGTERM asks :func:`usmtl.training.loop.train`
  to stop after the current step (it raises :class:`StopRequested`; an unfinished epoch is
  abandoned, so nothing of it is saved), a second one stops at once.
- :func:`finite_guard`: the first non-finite batch loss, epoch loss or weight raises a
  :class:`NonFiniteError` before any checkpoint or backup of that epoch is written.
- :func:`crash_safe_backup` replaces ``keras.callbacks.BackupAndRestore``: each epoch's
  state is written whole to memory, then to a temporary file, renamed, and only then named
  by ``backup/complete.json`` (written last, atomically); the previous state is deleted
  after that. A write that fails (disk full) leaves the previous backup complete and is a
  :class:`DiskFullError` naming the path and the space needed, never a crash inside HDF5;
  a state that ``complete.json`` does not name, or that fails its size or CRC check, is
  never loaded.
- :func:`save_model_file`: ``.keras`` files written the same way (memory, temporary file,
  rename).

Example:
    >>> from usmtl.training.failsafe import human_bytes
    >>> human_bytes(1536), human_bytes(10)
    ('1.5 KB', '10 bytes')
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
import shutil
import signal
import sys
import threading
import zipfile

import numpy as np

from usmtl.errors import UsmtlError


# ---------------------------------------------------------------------------------------
# Failing safe: stop signals
# ---------------------------------------------------------------------------------------


class StopRequested(Exception):
    """:func:`~usmtl.training.loop.train` stopped on a signal (``signum``) during epoch
    ``epoch`` (0-based): after its last step and callbacks (``finished``), or abandoning it."""

    def __init__(self, signum: int, epoch: int | None, finished: bool = False):
        self.signum, self.epoch, self.finished = int(signum), epoch, finished
        super().__init__(f"stopped by {signal_name(signum)}")


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopSignals:
    """While active (a context manager), SIGINT and SIGTERM ask training to stop.

    The first signal sets ``requested`` (its number) and prints ``notice``:
    :func:`~usmtl.training.loop.train` stops after the current step. A second one raises
    :class:`StopRequested` at once.
    Handlers are installed only in the main thread (Python delivers signals there) and
    the previous ones are restored on exit.
    """

    def __init__(self, notice: str = "stopping after the current step (press Ctrl-C, or send "
                                      "the signal, again to stop at once)",
                 signals=(signal.SIGINT, signal.SIGTERM)):
        self.notice, self.signals = notice, tuple(signals)
        self.requested: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.requested is not None:
            raise StopRequested(signum, None)
        self.requested = signum
        print(f"\n{signal_name(signum)} received: {self.notice}", file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                with contextlib.suppress(ValueError, OSError):
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(signum, handler)
        self._previous.clear()
        return False


# ---------------------------------------------------------------------------------------
# Failing safe: non-finite losses and weights
# ---------------------------------------------------------------------------------------


class NonFiniteError(UsmtlError):
    """Training produced a non-finite loss or weight; nothing of that epoch was saved."""


def finite_guard(explain):
    """A callback that raises :class:`NonFiniteError` on the first non-finite loss of a
    batch (``loss`` and every ``*_loss`` in the logs), of an epoch, or weight at an epoch's
    end. Put it first among the callbacks: no later one sees the epoch.

    ``explain(epoch, batch, what)``: the error's message (``epoch`` 0-based, ``batch`` the
    0-based batch or None at the epoch's end, ``what`` says what is not finite, in words).
    """
    import keras

    def bad_losses(logs) -> dict:
        return {k: v for k, v in (logs or {}).items()
                if (k == "loss" or k.endswith("_loss")) and not math.isfinite(float(v))}

    class StopOnNonFinite(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            bad = bad_losses(logs)
            if bad:
                raise NonFiniteError(explain(self.epoch, batch, _losses_text(bad)))

        def on_epoch_end(self, epoch, logs=None):
            bad = bad_losses(logs)
            if bad:
                raise NonFiniteError(explain(epoch, None, _losses_text(bad)))
            for variable in self.model.variables:
                value = np.asarray(variable)
                if value.dtype.kind == "f" and not np.isfinite(value).all():
                    name = getattr(variable, "path", None) or getattr(variable, "name", "?")
                    raise NonFiniteError(explain(epoch, None, f"the weight {name} is not finite"))

    return StopOnNonFinite()


def _losses_text(values: dict) -> str:
    return "the loss is not finite (" + ", ".join(f"{k} = {v}" for k, v in values.items()) + ")"


# ---------------------------------------------------------------------------------------
# Failing safe: files written whole or not at all
# ---------------------------------------------------------------------------------------


class DiskFullError(UsmtlError):
    """A file could not be written for lack of space; the previous version of it is intact."""


def human_bytes(n: float) -> str:
    """``1.5 MB``: bytes for a reader (powers of 1024)."""
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} TB"


def free_bytes(folder: str) -> int | None:
    """Bytes free for this user in ``folder``'s file system (``shutil.disk_usage``)."""
    try:
        return int(shutil.disk_usage(folder).free)
    except OSError:
        return None


def _space_message(path: str, needed: int, free: int | None) -> str:
    folder = os.path.dirname(os.path.abspath(path))
    have = "unknown" if free is None else human_bytes(free)
    more = needed if free is None or free >= needed else needed - free
    return (f"Could not write {path}: no space left on the device ({human_bytes(needed)} "
            f"needed, {have} free in {folder}); the previous version of it, if any, is intact. "
            f"Free at least {human_bytes(more)} more there")


def write_file_safely(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all: a temporary file beside it, flushed
    and synced, then renamed over it.

    Raises:
        DiskFullError: not enough free space (checked first with ``shutil.disk_usage``, and
            ENOSPC/EDQUOT while writing); the message names ``path``, the bytes needed and
            free. ``path`` is left as it was and no temporary file remains.
        UsmtlError: any other failed write, naming ``path``.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    free = free_bytes(folder)
    if free is not None and free < len(data):
        raise DiskFullError(_space_message(path, len(data), free))
    tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            _write_all(f, data, tmp)
        os.replace(tmp, path)
        tmp = None
        _sync_folder(folder)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(_space_message(path, len(data), free_bytes(folder))) from exc
        raise UsmtlError(f"Could not write {path}: {type(exc).__name__}: {exc}") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)


def _write_all(f, data: bytes, name: str) -> None:
    """Write, flush and sync ``data`` to the open file ``f`` (the temporary file ``name``);
    an OSError on a full disk."""
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def _sync_folder(folder: str) -> None:
    """Make a rename in ``folder`` durable (best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def model_bytes(model) -> bytes:
    """The ``.keras`` archive of ``model`` (config, weights, optimizer state), built in
    memory: no HDF5 library writes to disk."""
    import io

    from keras.src.saving import saving_lib

    buffer = io.BytesIO()
    saving_lib.save_model(model, buffer)
    return buffer.getvalue()


def save_model_file(model, path: str) -> None:
    """``model.save(path)`` for a ``.keras`` file, written whole or not at all
    (:func:`write_file_safely`: a full disk is a :class:`DiskFullError`)."""
    write_file_safely(path, model_bytes(model))


def archive_is_whole(path: str, size: int | None = None) -> str | None:
    """Why the ``.keras`` archive at ``path`` cannot be trusted (missing, of the wrong size,
    not a zip file, a member failing its CRC), or None when it is whole."""
    try:
        actual = os.path.getsize(path)
    except OSError:
        return "the file is missing"
    if size is not None and actual != size:
        return f"it holds {actual} bytes, {size} were written"
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        return f"it is not a whole archive ({exc})"
    return None if broken is None else f"its member {broken} fails its CRC check"


# ---------------------------------------------------------------------------------------
# Failing safe: the backup to resume from
# ---------------------------------------------------------------------------------------

BACKUP_POINTER = "complete.json"
_LEGACY_WEIGHTS, _LEGACY_STATE = "latest.weights.h5", "training_metadata.json"


def _note(text: str) -> None:
    print(f"Note: {text}", file=sys.stderr, flush=True)


def find_backup(backup_dir: str, note=_note) -> tuple[int, str] | None:
    """``(epochs completed, state file)`` of the complete backup in ``backup_dir``, or None.

    The state ``complete.json`` names, checked (size and CRC) before it is trusted; or a
    backup of ``keras.callbacks.BackupAndRestore`` (earlier versions of usmtl) whose HDF5
    file reads whole. Anything else (an interrupted write, a truncated file) is skipped
    with a ``note``, never loaded.
    """
    pointer = os.path.join(backup_dir, BACKUP_POINTER)
    if os.path.isfile(pointer):
        try:
            with open(pointer) as f:
                state = json.load(f)
            epoch, name, size = int(state["epoch"]), str(state["file"]), int(state["bytes"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            note(f"skipping the backup in {backup_dir}: {pointer} cannot be read ({exc})")
            return None
        path = os.path.join(backup_dir, os.path.basename(name))
        why = archive_is_whole(path, size)
        if why is not None:
            note(f"skipping the backup {path} (epoch {epoch}): {why}")
            return None
        return epoch, path
    weights, meta = (os.path.join(backup_dir, n) for n in (_LEGACY_WEIGHTS, _LEGACY_STATE))
    if os.path.isfile(weights) and os.path.isfile(meta):
        try:
            with open(meta) as f:
                epoch = int(json.load(f)["epoch"])
            _read_whole_h5(weights)
        except Exception as exc:  # noqa: BLE001 (h5py raises many types)
            note(f"skipping the backup {weights}: it cannot be read whole "
                 f"({type(exc).__name__}: {exc})")
            return None
        return epoch, weights
    return None


def _read_whole_h5(path: str) -> None:
    import h5py

    def read(name, item):
        if isinstance(item, h5py.Dataset):
            item[()]

    with h5py.File(path, "r") as f:
        f.visititems(read)


def crash_safe_backup(backup_dir: str, note=_note):
    """A callback that backs up the training state after each epoch and restores the
    last complete one when training begins (see the module docstring); it replaces
    ``keras.callbacks.BackupAndRestore`` and, unlike it, leaves the backup in place at the
    end (the caller removes it once its outputs are written)."""
    import keras

    class CrashSafeBackup(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            found = find_backup(backup_dir, note)
            _remove_partial(backup_dir, keep=None if found is None else found[1])
            if found is None:
                return
            epoch, path = found
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)
            try:
                self.model.load_weights(path)
            except Exception as exc:  # another model's file: refuse it, name it, never hang
                raise UsmtlError(f"{path}: the backup of epoch {epoch} does not fit this run's "
                                 f"model (replaced by another model's file?); remove "
                                 f"{backup_dir} to train again from the start. Received: "
                                 f"{type(exc).__name__}: {str(exc)[:200]}") from exc
            self.model._initial_epoch = epoch

        def on_epoch_end(self, epoch, logs=None):
            data = model_bytes(self.model)
            name = f"state-e{epoch + 1:04d}.keras"
            write_file_safely(os.path.join(backup_dir, name), data)
            pointer = {"epoch": epoch + 1, "file": name, "bytes": len(data)}
            write_file_safely(os.path.join(backup_dir, BACKUP_POINTER),
                              (json.dumps(pointer) + "\n").encode())
            _remove_partial(backup_dir, keep=os.path.join(backup_dir, name))

    return CrashSafeBackup()


def _remove_partial(backup_dir: str, keep: str | None) -> None:
    """Remove the files of ``backup_dir`` that are no complete backup: temporary files,
    states that ``complete.json`` does not name, a Keras backup superseded by ``keep``."""
    if not os.path.isdir(backup_dir):
        return
    keep = None if keep is None else os.path.abspath(keep)
    for entry in os.listdir(backup_dir):
        path = os.path.abspath(os.path.join(backup_dir, entry))
        partial = entry.endswith(".tmp") or (entry.startswith("state-") and entry.endswith(".keras"))
        legacy = entry.startswith((_LEGACY_WEIGHTS, _LEGACY_STATE))
        if path != keep and (partial or (legacy and keep is not None and keep.endswith(".keras"))):
            with contextlib.suppress(OSError):
                os.remove(path)
