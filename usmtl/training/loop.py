"""The training loop behind :func:`usmtl.training.fit.fit`: one step for every strategy.

Why not ``model.fit``: Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy``
("Attempt to convert a value (PerReplica ...)", keras-team/keras#20585, open). This loop
calls the model's own ``train_step`` (Keras' forward pass, ``compute_loss`` with the
compiled BCE terms plus the hinge the model adds with ``add_loss``, loss scaling for
mixed float16, the optimizer's gradient all-reduce and update, the loss metrics) through
``strategy.run`` inside a ``tf.function``, which works under the default, mirrored and
multi-worker strategies alike. So losses, hinge and metrics are defined once, by Keras,
whatever the strategy.

Around it the loop does what ``fit`` does: a ``keras.callbacks.CallbackList`` with history
and progress bar, the backup's initial epoch, ``stop_training``. It adds two
switches: ``jit_compile`` (XLA on the per-step function, as Keras does) and
``steps_per_execution`` (several steps per call of the outer function, in a ``tf.range``
loop over the distributed iterator).

Failing safe (the second half of this module):

- :class:`StopSignals`: the first SIGINT or SIGTERM asks :func:`train` to stop after the
  current step (it raises :class:`StopRequested`; an unfinished epoch is abandoned, so
  nothing of it is saved), a second one stops at once. Whatever stops training, the
  ``tf.data`` iterator is released before the exception leaves :func:`train` (left to the
  interpreter's exit, its threads made the process abort).
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
    >>> import tensorflow as tf
    >>> from usmtl.training.loop import train
    >>> history = train(model, dataset, tf.distribute.get_strategy(), epochs=2,
    ...                 steps_per_epoch=10, callbacks=[], verbose=0)  # doctest: +SKIP
    >>> sorted(history.history)  # doctest: +SKIP
    ['alnm_loss', 'loss', 'malignancy_loss']
"""

from __future__ import annotations

import contextlib
import errno
import gc
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

NAME = "tensorflow"  # the engine's Keras backend (usmtl.training.engine)


def tf_config() -> dict:
    """The parsed ``TF_CONFIG`` environment variable (``{}`` when unset)."""
    text = os.environ.get("TF_CONFIG", "").strip()
    if not text:
        return {}
    from usmtl.errors import UsmtlError

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsmtlError(f"TF_CONFIG is not valid JSON ({exc}). Received: {text[:200]!r}") from None
    if not isinstance(value, dict):
        raise UsmtlError(f"TF_CONFIG must be a JSON object. Received: {text[:200]!r}")
    return value


def cluster_size() -> int:
    """Number of tasks (chief and workers) in ``TF_CONFIG``'s cluster; 0 without one."""
    cluster = tf_config().get("cluster", {}) or {}
    return sum(len(cluster.get(kind, []) or []) for kind in ("chief", "worker"))


def is_chief() -> bool:
    """True for the task that writes the run directory: the ``chief``, or worker 0 of a
    cluster without one; always True without ``TF_CONFIG``."""
    config = tf_config()
    task = config.get("task", {}) or {}
    if not task:
        return True
    kind, index = task.get("type", "worker"), int(task.get("index", 0))
    if kind == "chief":
        return True
    has_chief = bool((config.get("cluster", {}) or {}).get("chief"))
    return kind == "worker" and index == 0 and not has_chief


def task_label() -> str:
    task = tf_config().get("task", {}) or {}
    return f"{task.get('type', 'worker')}{task.get('index', 0)}" if task else "local"


def resolve_precision(precision: str) -> str:
    """``auto``: mixed_float16 where a GPU is visible, float32 on CPU."""
    if precision != "auto":
        return precision
    import tensorflow as tf

    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "float32"


def resolve_strategy(name: str):
    """The ``tf.distribute`` strategy for ``train.strategy``.

    ``auto``: MultiWorkerMirroredStrategy when ``TF_CONFIG`` names a cluster of several
    tasks, MirroredStrategy across several local GPUs, else the default strategy.
    ``multiworker`` reads the cluster from ``TF_CONFIG`` (one worker without it). Call this
    before anything else touches TensorFlow's devices: a multi-worker strategy must be
    created before the runtime starts.
    """
    import tensorflow as tf

    if name == "multiworker" or (name == "auto" and cluster_size() > 1):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        # Without GPUs, mirror over the logical CPUs a caller configured (tests do).
        return tf.distribute.MirroredStrategy(None if gpus or len(cpus) < 2 else cpus)
    return tf.distribute.get_strategy()


def strategy_name(strategy) -> str:
    """``default``, ``mirrored`` or ``multiworker``: the ``train.strategy`` value that
    ``strategy`` is (MultiWorkerMirroredStrategy's class is CollectiveAllReduceStrategy)."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multiworker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    return "default" if type(strategy).__name__.startswith("_Default") else type(strategy).__name__


def gpu_count() -> int:
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def set_seed(seed: int) -> None:
    """Python, NumPy, TensorFlow and Keras seeds."""
    import keras

    keras.utils.set_random_seed(int(seed))


def devices() -> list[str]:
    import tensorflow as tf

    return [d.name for d in tf.config.list_logical_devices()]


def make_train_data(crops, labels: dict, data, batch_size: int, seed: int = 0,
                    balance: bool = False, cache_dir: str | None = None, name: str = "train"):
    """The training ``tf.data`` pipelines of ``crops`` (a :class:`usmtl.data.crops.Crops`),
    one per epoch (:class:`usmtl.data.pipeline.TrainEpochs`): shuffled full batches of
    ``(image, y, sample_weight)``, cached as ``data.cache`` says."""
    from usmtl.data.pipeline import make_train_epochs

    return make_train_epochs(labels, data, batch_size, seed=seed, balance=balance,
                             cache_dir=cache_dir, name=name, crops=crops)


def make_eval_data(crops, data, batch_size: int, cache_dir: str | None = None,
                   name: str = "val"):
    """The images of ``crops`` in order, batched, for :func:`predict_function`."""
    from usmtl.data.pipeline import make_dataset

    return make_dataset(None, None, None, data, batch_size, training=False,
                        cache_dir=cache_dir, name=name, crops=crops)


def resolve_jit(setting, strategy) -> bool:
    """``auto``: XLA on with one GPU and one replica (Keras' own rule: off on CPU, off under
    ``tf.distribute`` with several replicas); ``true``/``false`` as given."""
    if isinstance(setting, bool):
        return setting
    return gpu_count() > 0 and strategy.num_replicas_in_sync == 1 and cluster_size() <= 1


def resolve_steps_per_execution(setting, steps_per_epoch: int) -> int:
    """``auto``: 8 steps per call on GPU (hides the per-call overhead of a fast step), 1 on
    CPU (the step dominates and callbacks then see every batch); never more than an epoch."""
    if setting == "auto":
        setting = 8 if gpu_count() else 1
    return max(1, min(int(setting), int(steps_per_epoch)))


def prepare_dataset(dataset, strategy):
    """Shard by data under several workers (the crops are cached, every worker can read
    every element) and distribute the global batch over the replicas."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        dataset = dataset.with_options(options)
    return strategy.experimental_distribute_dataset(dataset)


def build_for_training(model, element_spec) -> None:
    """Create every variable (model, loss, metrics, optimizer) before the first traced step,
    as ``fit`` does, so that a backup can restore all of them."""
    symbolic_build = getattr(model, "_symbolic_build", None)
    if symbolic_build is not None:
        symbolic_build(data_batch=element_spec)
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def make_step_function(model, strategy, jit_compile: bool):
    """``run(iterator, n)``: ``n`` training steps on a distributed iterator, returning the
    model's metric results (loss and per-task losses, reduced over replicas and workers)."""
    import tensorflow as tf

    @tf.autograph.experimental.do_not_convert
    def one_step(data):
        strategy.run(model.train_step, args=(data,))

    one_step = tf.function(one_step, jit_compile=jit_compile, reduce_retracing=True)

    @tf.function
    def run(iterator, n):
        for _ in tf.range(n):
            one_step(next(iterator))
        return model.get_metrics_result()

    return run


def make_sync_function(model, strategy):
    """A function averaging the model's float non-trainable variables (BatchNorm moving
    statistics) over all replicas, or None with one replica.

    Each replica updates its copy of the moving statistics from its own shard of the batch,
    so without this the copies drift apart: across workers the saved models would differ,
    and on one machine validation would see the first replica's statistics only. The mean
    of the copies is the moving mean of the global batch (equal shards), and the usual
    approximation of its moving variance (as timm's ``distribute_bn`` does).
    """
    import tensorflow as tf

    if strategy.num_replicas_in_sync <= 1:
        return None
    variables = [v for v in model.non_trainable_variables
                 if "float" in str(getattr(v, "dtype", ""))]
    if not variables:
        return None

    def replica_fn():
        context = tf.distribute.get_replica_context()
        means = context.all_reduce(tf.distribute.ReduceOp.MEAN,
                                   [tf.identity(v.value) for v in variables])
        for variable, mean in zip(variables, means):
            variable.assign(mean)

    @tf.function
    def sync():
        strategy.run(replica_fn)

    return sync


def _python_logs(logs) -> dict:
    return {k: float(np.asarray(v)) for k, v in logs.items()}


def train(model, dataset, strategy, *, epochs: int, steps_per_epoch: int, callbacks=(),
          verbose=2, steps_per_execution: int = 1, jit_compile: bool = False, stop=None):
    """Train a compiled ``model`` on ``dataset`` (batches of ``(x, y, sample_weight)``,
    exactly ``steps_per_epoch`` per epoch; a ``TrainEpochs`` gives each epoch its own
    order) under ``strategy``; returns the History.

    The model and its optimizer must have been created under ``strategy.scope()``.
    ``stop``: a :class:`StopSignals` (anything with a ``requested`` attribute): once it is
    set, :class:`StopRequested` is raised after the current step (the epoch is abandoned)
    or after the epoch's callbacks when that step ended the epoch.
    """
    import keras
    import tensorflow as tf

    steps_per_execution = max(1, min(int(steps_per_execution), int(steps_per_epoch)))
    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(
        [history] + list(callbacks), add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=epochs, steps=steps_per_epoch)
    with strategy.scope():
        build_for_training(model, dataset.element_spec)
    distributed = None if hasattr(dataset, "for_epoch") else prepare_dataset(dataset, strategy)
    run = make_step_function(model, strategy, jit_compile)
    sync = make_sync_function(model, strategy)

    model.stop_training = False
    callback_list.on_train_begin()
    initial_epoch = int(getattr(model, "_initial_epoch", None) or 0)  # set by the backup
    epoch_logs: dict = {}
    iterator = None
    try:
        for epoch in range(initial_epoch, epochs):
            if stop is not None and stop.requested:  # asked before training began
                raise StopRequested(stop.requested, epoch, finished=False)
            model.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            if hasattr(dataset, "for_epoch"):  # TrainEpochs: the order of this epoch
                distributed = prepare_dataset(dataset.for_epoch(epoch), strategy)
            iterator = iter(distributed)
            step, logs = 0, {}
            while step < steps_per_epoch:
                n = min(steps_per_execution, steps_per_epoch - step)
                callback_list.on_train_batch_begin(step)
                logs = _python_logs(run(iterator, tf.constant(n)))
                step += n
                callback_list.on_train_batch_end(step - 1, logs)
                if stop is not None and stop.requested and step < steps_per_epoch:
                    raise StopRequested(stop.requested, epoch, finished=False)
                if model.stop_training:
                    break
            if sync is not None:  # before validation and checkpoints read them
                sync()
            epoch_logs = dict(logs)
            callback_list.on_epoch_end(epoch, epoch_logs)
            iterator = None
            if stop is not None and stop.requested and epoch + 1 < epochs:
                raise StopRequested(stop.requested, epoch, finished=True)
            if model.stop_training:
                break
    except BaseException as exc:
        # Release the tf.data iterator (and its worker threads) now: left to the
        # interpreter's exit, they abort the process ("terminate called ...") or hang it.
        iterator = distributed = None
        release_frames(exc)
        raise
    callback_list.on_train_end(logs=epoch_logs)
    model._initial_epoch = None
    return history


def predict_function(model, jit_compile: bool = False):
    """``predict(dataset) -> {task: (n, 1) array}`` with the model in inference mode, run on
    this process alone (no ``strategy.run``): every worker of a multi-worker run computes
    the same validation predictions without collectives, and ``model.predict``'s own
    distribution path is avoided (it fails under ``MultiWorkerMirroredStrategy``)."""
    import tensorflow as tf

    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def infer(x):
        return model(x, training=False)

    def predict(dataset):
        parts: dict = {}
        iterator = iter(dataset)
        try:
            for batch in iterator:
                x = batch[0] if isinstance(batch, tuple) else batch
                for name, value in infer(x).items():
                    parts.setdefault(name, []).append(np.asarray(value))
        except BaseException as exc:
            iterator = None  # release tf.data's threads now (see train)
            release_frames(exc)
            raise
        return {name: np.concatenate(values) for name, values in parts.items()}

    return predict


def release_frames(exc: BaseException) -> None:
    """Drop the local variables of the frames that ``exc`` (and the exceptions it chains)
    passed through, then collect: a ``tf.data`` iterator held there (an argument of the
    step function) is destroyed now, its worker threads stopped, rather than at the
    interpreter's exit, where they abort or hang the process."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            # TensorFlow filters its own frames out of tracebacks, but the frames it keeps
            # hold them through f_back: clear the whole chain (executing frames refuse).
            frame = tb.tb_frame
            while frame is not None:
                with contextlib.suppress(RuntimeError):
                    frame.clear()
                frame = frame.f_back
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    gc.collect()


# ---------------------------------------------------------------------------------------
# Failing safe: stop signals
# ---------------------------------------------------------------------------------------


class StopRequested(Exception):
    """:func:`train` stopped on a signal (``signum``) during epoch ``epoch`` (0-based):
    after its last step and callbacks (``finished``), or abandoning it."""

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

    The first signal sets ``requested`` (its number) and prints ``notice``: :func:`train`
    stops after the current step. A second one raises :class:`StopRequested` at once.
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
