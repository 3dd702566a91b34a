"""One short console line per epoch when the output is not a terminal (a log, a pipe, CI).

Keras' own per-epoch line (``verbose=2``) lists every metric, ~440 characters with five
heads. This one says the loss, each task's validation AUC (``-`` while undefined: a child
without validation positives) and the epoch's time; the full metrics go to the log file of
``usmtl --log`` (:func:`usmtl.console.log`).

Example::

    epoch  3/30  loss 0.612  val AUC malignancy 0.912, alnm 0.700, aln_ge_2 -  (12 s)
"""

from __future__ import annotations

import math
import sys
import time

import keras

from usmtl.console import log


def format_epoch(epoch: int, epochs: int, logs: dict, tasks, seconds: float) -> str:
    """The line of epoch ``epoch`` (0-based) of ``epochs``.

    Example:
        >>> format_epoch(2, 30, {"loss": 0.6123, "val_auc_a": 0.9, "val_auc_b": float("nan")},
        ...              ["a", "b"], 12.3)
        'epoch  3/30  loss 0.612  val AUC a 0.900, b -  (12 s)'
    """
    width = len(str(epochs))
    parts = [f"epoch {epoch + 1:>{width}}/{epochs}"]
    loss = logs.get("loss")
    if loss is not None:
        parts.append(f"loss {float(loss):.3f}")
    aucs = []
    for task in tasks:
        value = logs.get(f"val_auc_{task}")
        if value is not None:
            value = float(value)
            aucs.append(f"{task} {'-' if math.isnan(value) else f'{value:.3f}'}")
    if aucs:
        parts.append("val AUC " + ", ".join(aucs))
    return "  ".join(parts) + f"  ({seconds:.0f} s)"


class EpochLine(keras.callbacks.Callback):
    """Prints :func:`format_epoch` to stdout at each epoch's end and logs every metric."""

    def __init__(self, epochs: int, tasks, stream=None):
        super().__init__()
        self.epochs, self.tasks = int(epochs), list(tasks)
        self.stream = stream
        self._started = time.time()

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        line = format_epoch(epoch, self.epochs, logs, self.tasks, time.time() - self._started)
        print(line, file=self.stream or sys.stdout, flush=True)
        log(f"epoch {epoch + 1}: " + ", ".join(f"{k}={float(v):.4g}" for k, v in logs.items()
                                                if _is_number(v)))


def _is_number(value) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False
