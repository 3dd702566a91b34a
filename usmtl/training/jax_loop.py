"""The training engine on JAX: what :mod:`usmtl.training.loop` does for TensorFlow, without
TensorFlow anywhere on the path.

:func:`usmtl.training.fit.fit` asks :func:`usmtl.training.engine.training_engine` for the
engine of the Keras backend and calls the same functions on either: resolve the precision,
strategy, XLA and ``steps_per_execution``; make the training and evaluation data; train;
predict. Here:

- Inputs: every RoI crop is read once, by a pool of threads with OpenCV (or from a packed
  crop file), into one uint8 NumPy array (:meth:`usmtl.data.crops.Crops.load`); an epoch
  is a seeded permutation of it cut into full batches (:class:`ArrayBatches`, a
  ``keras.utils.PyDataset``). Pixels travel as uint8, a quarter of float32's bytes, and are
  cast on the device; augmentation is the model's own ``RoiAugment`` layer, inside the
  compiled step.
- The loop is Keras' own ``fit`` (the multi-worker bug it works around under TensorFlow,
  keras#20585, does not concern JAX), jit-compiled by XLA, with ``steps_per_execution``
  steps per call and bfloat16 mixed precision on an accelerator (``train.precision:
  auto``). The callbacks are those of the TensorFlow path (validation and best checkpoint,
  history, backup and resume, the non-finite guard); TensorBoard's writer needs TensorFlow
  and is left out (``history.csv`` holds the same numbers).
- One device: ``train.strategy`` other than ``auto``/``default`` is refused, naming it.

A ``.keras`` checkpoint written here opens under TensorFlow (and the reverse): Keras 3's
format does not depend on the backend (tests/test_jax_training.py checks that predictions
agree).

Example:
    >>> # KERAS_BACKEND=jax usmtl fit --config quickstart --manifest demo/manifest.csv --out r
    >>> from usmtl.training.engine import training_engine
    >>> training_engine().__name__  # with KERAS_BACKEND=jax  # doctest: +SKIP
    'usmtl.training.jax_loop'
"""

from __future__ import annotations

import contextlib
import sys

import jax
import keras
import numpy as np

from usmtl.data.targets import targets
from usmtl.errors import ConfigError
from usmtl.training.failsafe import StopRequested

NAME = "jax"


class SingleDevice:
    """The strategy of a JAX run: one device, one replica (``tf.distribute`` is
    TensorFlow's; see the module docstring)."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def accelerators() -> list:

    return [d for d in jax.devices() if d.platform != "cpu"]


def gpu_count() -> int:
    return len(accelerators())


def devices() -> list[str]:
    return [str(d) for d in jax.devices()]


def set_seed(seed: int) -> None:
    """``keras.utils.set_random_seed`` without its ``tf.random.set_seed``, which imports
    TensorFlow wherever it is installed (Keras 3.15): Python, NumPy and Keras' global seed
    generator."""
    import random

    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator
    from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED

    global_state.set_global_attribute(GLOBAL_RANDOM_SEED, int(seed))
    global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
    random.seed(seed)
    np.random.seed(seed)


def resolve_strategy(name: str) -> SingleDevice:
    if name not in ("auto", "default"):
        raise ConfigError(f"train.strategy={name} is a tf.distribute strategy: the JAX backend "
                          f"trains on one device here; use --set train.strategy=auto or the "
                          f"TensorFlow backend. Received: {name!r}")
    return SingleDevice()


def strategy_name(strategy) -> str:
    return "default"


def resolve_precision(precision: str) -> str:
    """``auto``: bfloat16 mixed precision on an accelerator (no loss scaling needed, and
    what XLA runs fastest on current GPUs and TPUs), float32 on CPU."""
    if precision != "auto":
        return precision
    return "mixed_bfloat16" if accelerators() else "float32"


def resolve_jit(setting, strategy) -> bool:
    """``auto``: on (Keras' own default on JAX, on CPU too); ``true``/``false`` as given."""
    return setting if isinstance(setting, bool) else True


def resolve_steps_per_execution(setting, steps_per_epoch: int) -> int:
    """``auto``: 8 steps per call on an accelerator, 1 on CPU; never more than an epoch."""
    if setting == "auto":
        setting = 8 if accelerators() else 1
    return max(1, min(int(setting), int(steps_per_epoch)))


class ArrayBatches(keras.utils.PyDataset):
    """Shuffled full batches of ``(uint8 images, {task: y}, {task: sample weight})`` from
    arrays in memory; epoch ``e``'s order is a permutation seeded by ``epoch_seed(seed, e)``, so a
    resumed run sees the order a straight one would have (:meth:`set_epoch`). With fewer
    images than a batch, one batch of all of them."""

    def __init__(self, images: np.ndarray, y: dict, weights: dict, batch_size: int, seed: int = 0):
        super().__init__(workers=1, use_multiprocessing=False)
        self.images, self.y, self.weights = images, y, weights
        self.seed = int(seed)
        self.batch_size = min(int(batch_size), len(images)) or 1
        self.steps = max(1, len(images) // self.batch_size)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        from usmtl.seeds import epoch_seed

        rng = np.random.default_rng(epoch_seed(self.seed, epoch))
        self.order = rng.permutation(len(self.images))

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int):
        rows = np.sort(self.order[index * self.batch_size:(index + 1) * self.batch_size])
        return (self.images[rows], {k: v[rows] for k, v in self.y.items()},
                {k: v[rows] for k, v in self.weights.items()})


class EvalImages:
    """Images to predict, in order, and the batch size to predict them with."""

    def __init__(self, images: np.ndarray, batch_size: int):
        self.images, self.batch_size = images, int(batch_size)

    def __len__(self) -> int:
        return len(self.images)


def make_train_data(crops, labels: dict, data, batch_size: int, seed: int = 0,
                    balance: bool = False, cache_dir: str | None = None,
                    name: str = "train") -> ArrayBatches:
    """The training batches of ``crops`` (a :class:`usmtl.data.crops.Crops`), every crop
    read once into memory (``data.cache`` does not apply: a JAX run keeps its crops in
    memory, 196 KB an image at 256 px)."""
    images = crops.load(progress=sys.stderr.isatty(), desc=f"reading {name} crops")
    y, weights = targets(labels, balance=balance)
    return ArrayBatches(images, y, weights, batch_size, seed)


def make_eval_data(crops, data, batch_size: int, cache_dir: str | None = None,
                   name: str = "val") -> EvalImages:
    return EvalImages(crops.load(progress=sys.stderr.isatty(), desc=f"reading {name} crops"),
                      batch_size)


def predict_function(model, jit_compile: bool = False):
    """``predict(images) -> {task: (n, 1) array}`` in inference mode, for the
    :class:`EvalImages` of :func:`make_eval_data` (or a uint8 array)."""
    def predict(images):
        batch = getattr(images, "batch_size", 32)
        images = getattr(images, "images", images)
        if len(images) == 0:
            return {name: np.zeros((0, 1), np.float32) for name in model.output}
        out = model.predict(images, batch_size=batch, verbose=0)
        return {name: np.asarray(value) for name, value in out.items()}

    return predict


def _stop_callback(stop, epochs: int, steps_per_epoch: int):
    """Raises :class:`StopRequested` once ``stop.requested``: after the current call of
    the step (an unfinished epoch is abandoned), or after the epoch's callbacks when that
    call ended the epoch (it runs last)."""
    class StopOnSignal(keras.callbacks.Callback):
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            if stop.requested:  # asked before training began
                raise StopRequested(stop.requested, epoch, finished=False)

        def on_train_batch_end(self, batch, logs=None):
            if stop.requested and batch + 1 < steps_per_epoch:
                raise StopRequested(stop.requested, self.epoch, finished=False)

        def on_epoch_end(self, epoch, logs=None):
            if stop.requested and epoch + 1 < epochs:
                raise StopRequested(stop.requested, epoch, finished=True)

    return StopOnSignal()


def _epoch_order(batches: ArrayBatches):
    class EpochOrder(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            batches.set_epoch(epoch)

    return EpochOrder()


def train(model, batches: ArrayBatches, strategy=None, *, epochs: int, steps_per_epoch: int,
          callbacks=(), verbose=2, steps_per_execution: int = 1, jit_compile: bool = True,
          stop=None):
    """Train a compiled ``model`` on ``batches`` with Keras' ``fit``; returns the History.

    ``steps_per_execution`` is the compiled model's own (``compile``); ``jit_compile``
    sets the model's. ``stop``: a :class:`~usmtl.training.failsafe.StopSignals`, as for the
    TensorFlow loop. The backup callback sets the initial epoch (``fit`` reads
    ``model._initial_epoch`` after ``on_train_begin``, as for ``BackupAndRestore``)."""
    model.jit_compile = bool(jit_compile)
    extra = [_epoch_order(batches)] + list(callbacks)
    if stop is not None:
        extra.append(_stop_callback(stop, epochs, steps_per_epoch))
    history = model.fit(batches, epochs=epochs, callbacks=extra, verbose=verbose, shuffle=False)
    model._initial_epoch = None
    return history
