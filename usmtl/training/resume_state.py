"""What a resumed fit needs besides the backup's weights and optimizer, to train on exactly
as the uninterrupted fit would have.

The backup (:func:`usmtl.training.failsafe.crash_safe_backup`) holds the weights, the optimizer
(its moments and step count, which the learning-rate schedule reads) and the epoch. It does
not hold the position of the random streams, nor the state of callbacks. Here:

- :func:`epoch_seeds`: at each epoch's beginning every Keras ``SeedGenerator`` of the model
  (the :class:`~usmtl.model.augment.RoiAugment` layer, dropout) is set to a state derived
  from ``(train.seed, epoch, its index)`` (:func:`usmtl.seeds.epoch_seed`), so epoch ``k``
  draws the same crops, flips and dropout masks whether or not the process was restarted
  before it. (Keras saves no ``SeedGenerator`` state in a ``.keras`` file.) The data order
  is derived the same way (``TrainEpochs`` on TensorFlow, ``ArrayBatches`` on JAX).
- :func:`resumable_early_stopping`: Keras' ``EarlyStopping`` whose patience counter and best
  value are replayed from the rows of ``history.csv`` already trained (the rows the backup
  covers), instead of starting again at zero.

Example:
    >>> from usmtl.training.resume_state import epoch_seeds
    >>> callback = epoch_seeds(seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import math
import os

import keras
import numpy as np

from usmtl.seeds import epoch_seed


def seed_generators(model) -> list:
    """Every ``keras.random.SeedGenerator`` of ``model``'s layers, in layer order, once."""
    found, seen = [], set()
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for generator in getattr(layer, "_seed_generators", []) or []:
            if id(generator) not in seen:
                seen.add(id(generator))
                found.append(generator)
    return found


def reseed(model, seed: int, epoch: int) -> int:
    """Set every seed generator of ``model`` to its state for ``epoch``; returns how many.

    Stream 0 is the data order's; generator ``i`` uses stream ``i + 1``."""
    generators = seed_generators(model)
    for index, generator in enumerate(generators):
        state = generator.state
        value = np.array([epoch_seed(seed, epoch, index + 1), 0])
        state.assign(value.astype(keras.backend.standardize_dtype(state.dtype)))
    return len(generators)


def epoch_seeds(seed: int):
    """A callback calling :func:`reseed` at each epoch's beginning (before any step)."""

    class EpochSeeds(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            reseed(self.model, seed, epoch)

    return EpochSeeds()


def history_values(history_path: str, column: str) -> list[tuple[int, float]]:
    """``(epoch, value)`` of ``column`` in each row of ``history.csv`` (NaN where empty or
    not a number); ``[]`` when the file or the column is missing."""
    if not os.path.isfile(history_path):
        return []
    rows = []
    with open(history_path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                epoch = int(float(row["epoch"]))
            except (KeyError, TypeError, ValueError):
                continue
            try:
                value = float(row.get(column))
            except (TypeError, ValueError):
                value = math.nan
            rows.append((epoch, value))
    return rows


def resumable_early_stopping(history_path: str, patience: int, monitor: str = "val_auc"):
    """``keras.callbacks.EarlyStopping(monitor, mode="max", patience)`` that, when training
    begins, replays the epochs already in ``history_path`` (a resumed run) so its patience
    counter and best value are those the uninterrupted fit had at that epoch."""

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            stop = bool(getattr(self.model, "stop_training", False))
            for epoch, value in history_values(history_path, monitor):
                self.on_epoch_end(epoch, {monitor: value})
            # A run is resumed only when it had not stopped: train on from here.
            self.model.stop_training = stop
            self.stopped_epoch = 0

    return ResumableEarlyStopping(monitor=monitor, mode="max", patience=int(patience))
