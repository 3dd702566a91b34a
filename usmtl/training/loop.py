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

Failing safe (:mod:`usmtl.training.failsafe`): a stop signal ends :func:`train` after the
current step (:class:`~usmtl.training.failsafe.StopRequested`); whatever stops training, the
``tf.data`` iterator is released before the exception leaves :func:`train` (left to the
interpreter's exit, its threads made the process abort).

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
import gc
import json
import os

import numpy as np

from usmtl.training.failsafe import StopRequested

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
