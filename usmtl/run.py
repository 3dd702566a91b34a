"""A run directory: its layout, its status, its lock, and the package's one atomic writer.

``usmtl fit`` writes a run directory and everything else reads one (``predict``,
``evaluate``, ``compare``, ``export``, ``explain``, ``experiment``); ``usmtl radiomics fit``
writes one too, without checkpoints. :class:`Run` names every file of it, so that no module
needs the trainer to find them::

    config.yaml  split.csv  run.json  versions.json  history.csv  logs/ (TensorBoard)
    checkpoints/best.keras (the model kept)  checkpoints/last.keras  checkpoints/best.json
    backup/ (the last complete epoch, to resume)  cache/ (a file cache, removed when finished)
    val_predictions.csv  val_metrics.json  <split>_predictions.csv (cached by evaluate; raw
    scores; <split>_predictions.json: the hashes of the manifest and split it was made from)  calibration.json (usmtl calibrate: applied whenever the run's scores are read)
    .lock  run.lock.json (while a process holds the run: its PID and host)

``run.json`` holds the manifest, the config's name and the status: ``running`` (in progress,
or interrupted: ``--resume`` continues it), ``finished`` or ``failed`` (stopped on an error
it names; ``--resume`` tries again).

Every JSON file of the package is written by :func:`write_json_atomic` (a temporary file in
the same folder, flushed and synced, then renamed over the target), so a reader never sees
half a file and a failed write leaves the previous file as it was. Importing this module
does not import TensorFlow or Keras.

Example:
    >>> from usmtl.run import Run
    >>> run = Run.open("runs/quickstart")  # doctest: +SKIP
    >>> run.status, run.config().name, run.model_path("best")  # doctest: +SKIP
    ('finished', 'quickstart', 'runs/quickstart/checkpoints/best.keras')
    >>> with run.lock():  # doctest: +SKIP
    ...     pass  # no other process may fit or resume this run meanwhile
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import sys
import threading
import time

# the package's one atomic writer, re-exported: every module writes through it
from usmtl.atomic import read_json, write_csv_atomic, write_json_atomic, write_text_atomic
from usmtl.data.splits import SPLIT_FILE
from usmtl.errors import UsmtlError

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
VERSIONS_FILE = "versions.json"
HISTORY_FILE = "history.csv"
LOGS_DIR = "logs"
CHECKPOINTS_DIR = "checkpoints"
BEST_MODEL = os.path.join(CHECKPOINTS_DIR, "best.keras")
LAST_MODEL = os.path.join(CHECKPOINTS_DIR, "last.keras")
BEST_STATE = os.path.join(CHECKPOINTS_DIR, "best.json")
BACKUP_DIR = "backup"
CACHE_DIR = "cache"
VAL_PREDICTIONS = "val_predictions.csv"
VAL_METRICS = "val_metrics.json"
CALIBRATION = "calibration.json"
LOCK_FILE = ".lock"
LOCK_INFO = "run.lock.json"
LOCK_FILES = (LOCK_FILE, LOCK_INFO)

STATUSES = ("running", "finished", "failed")
MODELS = {"best": BEST_MODEL, "last": LAST_MODEL}

__all__ = ["Run", "write_json_atomic", "write_text_atomic", "write_csv_atomic", "load_keras_model",
           "run_dir_of_model", "CONFIG_FILE", "SPLIT_FILE", "RUN_FILE", "BEST_MODEL", "LAST_MODEL",
           "BEST_STATE"]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


# ---------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------


def load_keras_model(path: str):
    """``keras.models.load_model`` with usmtl's custom layers registered, in Keras' safe mode
    (a file that would run Python code, such as a Lambda layer's, is refused).

    Raises:
        UsmtlError: Keras cannot or will not load the file; the reason is named.
    """
    import keras

    from usmtl.model import REGISTER_IMPORT  # registers the custom layers

    try:
        return keras.models.load_model(path, safe_mode=True)
    except (ValueError, TypeError, KeyError, OSError, AttributeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsmtlError(f"Cannot load the model file {path}: {reason} (usmtl loads models in "
                         f"Keras' safe mode: a file that would run code is refused; open only "
                         f"models you trust. Outside usmtl, `{REGISTER_IMPORT}` before "
                         f"keras.saving.load_model registers usmtl's layers). "
                         f"Received: {path}") from None


def run_dir_of_model(model_file: str) -> str:
    """The run directory a model file belongs to: ``RUN`` for ``RUN/checkpoints/*.keras``,
    else the file's folder."""
    folder = os.path.dirname(os.path.abspath(model_file))
    return os.path.dirname(folder) if os.path.basename(folder) == CHECKPOINTS_DIR else folder


# ---------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Hold:
    lock: object  # filelock.FileLock
    thread: int
    depth: int = 1


_HELD: dict[str, _Hold] = {}  # lock files this process holds, by real path
_HELD_GUARD = threading.Lock()


def _pid_alive(pid) -> bool:
    """Whether process ``pid`` runs on this host (a zombie does not)."""
    try:
        pid = int(pid)
        os.kill(pid, 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _note(text: str) -> None:
    print(f"Note: {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# The run directory
# ---------------------------------------------------------------------------------------



def file_sha256(path: str) -> str | None:
    """The SHA-256 of a file's bytes (hex), or None when it cannot be read."""
    import hashlib

    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()

class Run:
    """A run directory (see the module docstring). ``Run(path)`` only names the files;
    :meth:`create` writes a new run and :meth:`open` checks that ``path`` is one."""

    def __init__(self, path):
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return f"Run({self.path!r})"

    # -- layout ---------------------------------------------------------------------------

    def file(self, name: str) -> str:
        """The path of ``name`` (relative to the run directory)."""
        return os.path.join(self.path, name)

    config_path = property(lambda self: self.file(CONFIG_FILE), doc="config.yaml")
    split_path = property(lambda self: self.file(SPLIT_FILE), doc="split.csv")
    run_file = property(lambda self: self.file(RUN_FILE), doc="run.json")
    versions_path = property(lambda self: self.file(VERSIONS_FILE), doc="versions.json")
    history_path = property(lambda self: self.file(HISTORY_FILE), doc="history.csv")
    logs_dir = property(lambda self: self.file(LOGS_DIR), doc="logs/ (TensorBoard)")
    checkpoints_dir = property(lambda self: self.file(CHECKPOINTS_DIR), doc="checkpoints/")
    best_model = property(lambda self: self.file(BEST_MODEL), doc="checkpoints/best.keras")
    last_model = property(lambda self: self.file(LAST_MODEL), doc="checkpoints/last.keras")
    best_state_path = property(lambda self: self.file(BEST_STATE), doc="checkpoints/best.json")
    backup_dir = property(lambda self: self.file(BACKUP_DIR), doc="backup/ (to resume)")
    cache_dir = property(lambda self: self.file(CACHE_DIR), doc="cache/ (file cache of crops)")
    val_predictions_path = property(lambda self: self.file(VAL_PREDICTIONS), doc="val_predictions.csv")
    val_metrics_path = property(lambda self: self.file(VAL_METRICS), doc="val_metrics.json")
    calibration_path = property(lambda self: self.file(CALIBRATION), doc="calibration.json")
    lock_path = property(lambda self: self.file(LOCK_FILE), doc=".lock")
    lock_info_path = property(lambda self: self.file(LOCK_INFO), doc="run.lock.json")

    def predictions_path(self, split: str) -> str:
        """``<split>_predictions.csv``."""
        return self.file(f"{split}_predictions.csv")

    def predictions_stamp(self) -> dict:
        """What cached predictions were made from: the SHA-256 of the run's manifest and
        split files, and ``scores: raw`` (a cache holds the heads' own scores; the run's
        calibration is applied when read)."""
        return {"manifest": self.manifest_path, "manifest_sha256": file_sha256(self.manifest_path),
                "split_sha256": file_sha256(self.split_path), "scores": "raw"}

    def write_predictions_stamp(self, split: str) -> None:
        """Record beside ``<split>_predictions.csv`` what it was made from (call it after
        writing the CSV)."""
        write_json_atomic(self.file(f"{split}_predictions.json"), self.predictions_stamp())

    def stale_predictions(self, split: str) -> str | None:
        """Why the cached ``<split>_predictions.csv`` cannot be reused (missing, no stamp, the
        manifest or split changed since), or None when it can."""
        path, stamp = self.predictions_path(split), self.file(f"{split}_predictions.json")
        if not os.path.isfile(path):
            return "there is none"
        if not os.path.isfile(stamp):
            return f"{path} does not record the manifest it was made from"
        try:
            saved = read_json(stamp)
        except (OSError, ValueError) as exc:
            return f"{stamp} cannot be read ({exc})"
        now = self.predictions_stamp()
        changed = [name for name in ("manifest", "split")
                   if saved.get(f"{name}_sha256") != now[f"{name}_sha256"]]
        if changed:
            return f"the run's {' and '.join(changed)} changed since {path} was written"
        return None

    def model_path(self, which: str = "best") -> str:
        """``checkpoints/best.keras`` (the model kept) or ``checkpoints/last.keras``."""
        if which not in MODELS:
            raise UsmtlError(f"which must be one of {list(MODELS)}. Received: {which!r}")
        return self.file(MODELS[which])

    # -- creating and opening ------------------------------------------------------------

    @property
    def exists(self) -> bool:
        """Whether the directory holds a run (its ``run.json``)."""
        return os.path.isfile(self.run_file)

    def contents(self) -> list[str]:
        """What the directory holds besides its lock files (``[]`` when it does not exist)."""
        if not os.path.isdir(self.path):
            return []
        return sorted(n for n in os.listdir(self.path) if n not in LOCK_FILES)

    def require_empty(self, resumable: bool = True) -> None:
        """Raise unless the directory is missing or empty (its lock files aside); a directory
        that another process holds is reported as in use, with that process."""
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise UsmtlError(f"{self.path} is a file, not a run directory. Received: {self.path}")
        if not self.contents():
            return
        holder = self.holder_in_use()
        if holder is not None:
            raise UsmtlError(self._in_use_message(holder))
        hint = "pass --resume to continue it, or choose another --out" if resumable \
            else "choose another --out"
        raise UsmtlError(f"Run directory {self.path} already exists and is not empty: {hint}")

    @classmethod
    def create(cls, path, cfg, manifest: str, split: dict, resumable: bool = True, **info) -> "Run":
        """Write a new run: ``config.yaml``, ``split.csv`` and ``run.json`` (status
        ``running``, the manifest's absolute path, ``info``). Refuses a directory that is not
        empty (its lock files aside: create it under :meth:`lock`)."""
        from usmtl.config import save_config
        from usmtl.data.splits import save_split

        run = cls(path)
        run.require_empty(resumable)
        os.makedirs(run.path, exist_ok=True)
        save_config(cfg, run.config_path)
        save_split(split, run.split_path)
        run.write_json(RUN_FILE, {"manifest": os.path.abspath(manifest), "status": "running",
                                  "started": _now(), "config_name": cfg.name, **info})
        return run

    @classmethod
    def open(cls, path) -> "Run":
        """An existing run directory; raises when ``path`` holds no ``run.json``."""
        run = cls(path)
        if not run.exists:
            what = "does not exist" if not os.path.exists(run.path) else f"has no {RUN_FILE}"
            raise UsmtlError(f"Not a run directory: {run.path} {what} (a run directory is written "
                             f"by 'usmtl fit' or 'usmtl radiomics fit'). Received: {run.path}")
        return run

    def clear(self) -> None:
        """Remove everything in the directory but its lock files (a run that died before
        its ``run.json`` was written: nothing of it can be resumed)."""
        for name in self.contents():
            target = self.file(name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            else:
                os.remove(target)

    # -- run.json ------------------------------------------------------------------------

    def info(self) -> dict:
        """The content of ``run.json``."""
        return self.read_json(RUN_FILE)

    @property
    def status(self) -> str | None:
        """``running`` (in progress or interrupted), ``finished``, ``failed``, or None
        (no run here)."""
        return self.info().get("status") if self.exists else None

    @property
    def manifest_path(self) -> str:
        """The manifest the run was trained on (absolute)."""
        info = self.info()
        if "manifest" not in info:
            raise UsmtlError(f"{self.run_file} names no manifest. Received keys: {sorted(info)}")
        return info["manifest"]

    def update(self, **fields) -> dict:
        """Set ``fields`` in ``run.json``; returns its new content."""
        info = self.info()
        info.update(fields)
        self.write_json(RUN_FILE, info)
        return info

    def mark_running(self) -> dict:
        """Status ``running`` again (a failed run that is resumed); drops the error."""
        info = self.info()
        info.pop("error", None)
        info.pop("failed", None)
        info.update(status="running", resumed=_now())
        self.write_json(RUN_FILE, info)
        return info

    def mark_finished(self, **info) -> dict:
        """Status ``finished`` with the time and ``info`` (precision, seconds, ...)."""
        current = self.info()
        current.pop("error", None)
        current.pop("failed", None)
        current.update(status="finished", finished=_now(), **info)
        self.write_json(RUN_FILE, current)
        return current

    def mark_failed(self, reason) -> dict:
        """Status ``failed`` with the time and ``reason`` (an exception or a text)."""
        if isinstance(reason, BaseException):
            reason = f"{type(reason).__name__}: {reason}"
        return self.update(status="failed", failed=_now(), error=str(reason))

    # -- config, split, models, JSON -----------------------------------------------------

    def config(self):
        """The run's :class:`~usmtl.config.ExperimentConfig` (``config.yaml``)."""
        from usmtl.config import load_config

        if not os.path.isfile(self.config_path):
            raise UsmtlError(f"{self.path} has no {CONFIG_FILE}. Received: {self.path}")
        return load_config(self.config_path)

    def split(self) -> dict:
        """``{patient_id: train|val|test}`` (``split.csv``)."""
        from usmtl.data.splits import load_split

        return load_split(self.split_path)

    def open_model(self, which: str = "best"):
        """The Keras model ``which`` (``best`` or ``last``), custom layers registered."""
        path = self.model_path(which)
        if not os.path.isfile(path):
            raise UsmtlError(f"{self.path}: no {MODELS[which]}; is it a finished run directory? "
                             f"Received: {self.path}")
        return load_keras_model(path)

    def calibration(self) -> dict | None:
        """The recalibration of ``usmtl calibrate`` (:mod:`usmtl.evaluation.recalibrate`),
        or None when the run has none."""
        if not os.path.isfile(self.calibration_path):
            return None
        return read_json(self.calibration_path)

    def read_json(self, name: str):
        """A JSON file of the run (``name`` relative to it)."""
        return read_json(self.file(name))

    def write_json(self, name: str, data) -> None:
        """Write a JSON file of the run atomically (``name`` relative to it)."""
        path = self.file(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_json_atomic(path, data)

    # -- the lock ------------------------------------------------------------------------

    def holder(self) -> dict | None:
        """What ``run.lock.json`` says of the process holding (or last holding) the lock."""
        if not os.path.isfile(self.lock_info_path):
            return None
        try:
            with open(self.lock_info_path) as f:
                holder = json.load(f)
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def holder_in_use(self) -> dict | None:
        """The holder of a lock another process (or thread) holds now; None if nobody does.

        Probes the lock without waiting (an instant's acquisition when it is free).
        """
        if not os.path.isfile(self.lock_path):
            return None
        key = os.path.realpath(self.lock_path)
        with _HELD_GUARD:
            hold = _HELD.get(key)
        if hold is not None and hold.thread == threading.get_ident():
            return None
        from filelock import FileLock, Timeout

        probe = FileLock(self.lock_path, timeout=0, fallback_to_soft=False)
        try:
            probe.acquire()
        except Timeout:
            return self.holder() or {}
        except OSError:
            return None
        probe.release()
        return None

    def _in_use_message(self, holder: dict) -> str:
        if holder.get("pid") is None:
            who = "another process holds its lock"
        else:
            who = f"PID {holder['pid']} on {holder.get('host', '?')} holds its lock"
            if holder.get("started"):
                who += f" (since {holder['started']}"
                who += f": {holder['command']})" if holder.get("command") else ")"
        return (f"Run directory {self.path} is in use: {who}. Wait for that process to finish or "
                f"stop it; the lock of a process that died is taken over. Received: {self.path}")

    @contextlib.contextmanager
    def lock(self):
        """Hold the run directory's lock (``RUN/.lock``, an OS-level file lock) for the block.

        Refuses at once, without waiting, when another process (or thread) holds it: a
        :class:`UsmtlError` names its PID and host (from ``run.lock.json``, written on
        acquisition). A lock whose process died is free (the OS released it) and is taken
        over with a note on stderr. Re-entrant within a thread. Creates the directory.
        """
        os.makedirs(self.path, exist_ok=True)
        key = os.path.realpath(self.lock_path)
        with _HELD_GUARD:
            hold = _HELD.get(key)
            reentrant = hold is not None and hold.thread == threading.get_ident()
            if reentrant:
                hold.depth += 1
        if reentrant:
            try:
                yield self
            finally:
                with _HELD_GUARD:
                    hold.depth -= 1
            return

        flock = self._acquire()
        try:
            self._take_over_note()
            write_json_atomic(self.lock_info_path, {
                "pid": os.getpid(), "host": socket.gethostname(), "started": _now(),
                "command": " ".join(sys.argv)[:300]})
            with _HELD_GUARD:
                _HELD[key] = _Hold(flock, threading.get_ident())
            yield self
        finally:
            with _HELD_GUARD:
                _HELD.pop(key, None)
            with contextlib.suppress(OSError):
                os.remove(self.lock_info_path)
            flock.release()

    def _acquire(self):
        from filelock import FileLock, Timeout

        flock = FileLock(self.lock_path, timeout=0, fallback_to_soft=False)
        try:
            flock.acquire()
        except Timeout:
            raise UsmtlError(self._in_use_message(self.holder() or {})) from None
        except OSError as exc:
            raise UsmtlError(f"Cannot lock {self.lock_path} ({exc}): a run directory must be "
                             f"writable, on a file system with file locks (flock). "
                             f"Received: {self.path}") from None
        return flock

    def _take_over_note(self) -> None:
        """A ``run.lock.json`` found on acquisition was left by a process that died."""
        previous = self.holder()
        if not previous or previous.get("pid") is None:
            return
        pid, host = previous["pid"], previous.get("host", "?")
        if host != socket.gethostname():
            why = "on another host; its lock was released"
        elif _pid_alive(pid):
            why = "it no longer holds the lock"
        else:
            why = "that process is no longer running"
        _note(f"taking over the lock of {self.path} left by PID {pid} on {host} "
              f"(since {previous.get('started', '?')}): {why}")
