"""The ``tf.data`` input pipeline: decode and crop the RoI once, cache, shuffle, batch.

Decoding and cropping happen once per image (the first epoch); the crops are kept as uint8
(in memory or in a file cache, see :func:`resolve_cache`), so later epochs only shuffle and
batch. Images stay uint8 all the way into the model, a quarter of the bytes of float32: the
model's float32 input casts them on the device, and training-time augmentation is a layer
of the model (:class:`usmtl.model.augment.RoiAugment`) that runs inside the compiled
training step, on the accelerator where there is one. Evaluation datasets are
deterministic: same order, no augmentation.

A file that cannot be read inside a ``tf.data`` worker (it changed after the pre-check,
:func:`usmtl.data.prepare.require_usable`) is never a crash or a hang: any exception of the
reader becomes one :class:`ImageDecodeError` naming the file and its manifest line, which
``tf.data`` raises as an ``OpError`` and :func:`decode_failure` finds again (callers turn
it into a :class:`~usmtl.errors.UsmtlError`).

Labels are dictionaries keyed by task name. An unknown label (NaN) is fed as 0 with a
sample weight of 0, so it contributes nothing to its task's loss (Keras rejects
``class_weight`` for multi-output models; per-output sample weights are the way).

Example:
    >>> from usmtl.config import DataConfig
    >>> from usmtl.data.pipeline import make_dataset
    >>> ds = make_dataset(paths, boxes, labels, DataConfig(image_size=64), 32,
    ...                   training=True)  # doctest: +SKIP
    >>> image, y, weights = next(iter(ds))  # doctest: +SKIP
    >>> image.dtype, image.shape  # doctest: +SKIP
    (tf.uint8, TensorShape([32, 64, 64, 3]))
"""

from __future__ import annotations

import glob
import os
import threading

import numpy as np
import tensorflow as tf

from usmtl.config import DataConfig
from usmtl.data.roi import load_roi
from usmtl.errors import ImageReadError

# "auto" keeps the decoded crops in memory when they need less than this fraction of the
# memory available now (the rest is left to the model, TensorFlow and other processes).
MEMORY_FRACTION = 0.5


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def cache_bytes(n_images: int, image_size: int) -> int:
    """Size of the decoded uint8 cache of ``n_images`` RoI crops."""
    return int(n_images) * image_size * image_size * 3


def resolve_cache(setting: str, n_images: int, image_size: int, cache_dir: str | None = None,
                  name: str = "images", available: int | None = None) -> str:
    """Where :func:`roi_images` keeps its crops: ``"memory"``, ``"none"`` or a file prefix.

    ``auto``: memory when the crops take under ``MEMORY_FRACTION`` of the available memory
    (or when it is unknown), else a file cache ``cache_dir/name``; ``disk``: that file cache
    always. Without a ``cache_dir`` (predictions), a file cache falls back to memory for
    ``disk`` and to no cache for ``auto``. Any other value is used as a file prefix as is.
    """
    if setting in ("memory", "none"):
        return setting
    if setting in ("auto", "disk"):
        if setting == "auto":
            available = available_memory() if available is None else available
            if available is None or cache_bytes(n_images, image_size) < MEMORY_FRACTION * available:
                return "memory"
        if cache_dir is None:
            return "memory" if setting == "disk" else "none"
        os.makedirs(cache_dir, exist_ok=True)
        return os.path.join(cache_dir, f"{name}_{image_size}px")
    return setting


class ImageDecodeError(ImageReadError):
    """An image could not be read inside a ``tf.data`` worker; the message names the file
    and its manifest line."""


# The failures of the readers inside tf.data workers, newest last (a worker's exception
# reaches Python again only as the text of an OpError).
_FAILURES: list[str] = []
_FAILURES_GUARD = threading.Lock()
DECODE_MARKER = "usmtl could not read an image: "


def _record_failure(message: str) -> None:
    with _FAILURES_GUARD:
        _FAILURES.append(message)
        del _FAILURES[:-100]


def decode_failure(error: BaseException | None = None, clear: bool = True) -> str | None:
    """The reader failure behind ``error`` (an exception raised while iterating a dataset of
    :func:`roi_images`): the file, its manifest line and the reader's error, or None when
    it is no such failure. Without ``error``: the last failure recorded. ``clear`` forgets
    the failures recorded so far."""
    with _FAILURES_GUARD:
        last = _FAILURES[-1] if _FAILURES else None
        if clear:
            _FAILURES.clear()
    if error is None:
        return last
    text = str(getattr(error, "message", None) or error)
    if DECODE_MARKER in text:
        found = text.split(DECODE_MARKER, 1)[1].split("\n", 1)[0].strip()
        return found or last
    return last if isinstance(error, tf.errors.OpError) and last and last in text else None


def roi_images(paths: list[str], boxes: list, data: DataConfig, cache: str | None = None,
               cache_dir: str | None = None, name: str = "images",
               where: list[str] | None = None) -> tf.data.Dataset:
    """A deterministic dataset of ``(size, size, 3)`` uint8 RoI crops, cached as
    :func:`resolve_cache` decides from ``data.cache`` (or ``cache`` when given).

    ``where``: how errors name each image (``manifest.csv line 7 (image=a.png)``); default
    its path. A reader failure is raised as an :class:`ImageDecodeError` naming it (see
    the module docstring)."""
    size = data.image_size
    names = [str(p) for p in paths] if where is None else [str(w) for w in where]

    def load(index):
        i = int(index)
        try:
            return load_roi(paths[i], boxes[i], data.roi_margin, data.square_roi, size,
                            data.inpaint_marks)
        except Exception as exc:  # noqa: BLE001 (never let a reader's error escape as is)
            named = str(exc) if str(paths[i]) in str(exc) else f"{paths[i]}: {exc}"
            message = f"{names[i]}: {named}" if names[i] != str(paths[i]) else named
            _record_failure(message)
            raise ImageDecodeError(DECODE_MARKER + message) from None

    dataset = tf.data.Dataset.range(len(paths)).map(
        lambda i: tf.numpy_function(load, [i], tf.uint8, stateful=False),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.map(lambda x: tf.ensure_shape(x, (size, size, 3)))
    where = resolve_cache(cache or data.cache, len(paths), size, cache_dir, name)
    if where == "memory":
        dataset = dataset.cache()
    elif where != "none":
        # A run killed during its first epoch leaves a lock file that would block the cache.
        for lock in glob.glob(glob.escape(where) + "*.lockfile"):
            os.remove(lock)
        dataset = dataset.cache(where)
    return dataset


def targets(labels: dict[str, np.ndarray], balance: bool = False):
    """``(y, sample_weight)`` dictionaries from NaN-for-unknown labels.

    With ``balance`` the positives of each task are weighted by negatives/positives, so a
    rare task (ALNM >= 4) is not drowned by its negatives.
    """
    y, weights = {}, {}
    for name, values in labels.items():
        values = np.asarray(values, np.float32)
        known = ~np.isnan(values)
        w = known.astype(np.float32)
        if balance:
            pos = float(np.sum(values[known] == 1))
            neg = float(np.sum(values[known] == 0))
            if pos > 0 and neg > 0:
                w = np.where(known & (values == 1), neg / pos, w).astype(np.float32)
        y[name] = np.nan_to_num(values, nan=0.0).reshape(-1, 1)
        weights[name] = w
    return y, weights


def make_dataset(paths, boxes, labels: dict[str, np.ndarray] | None, data: DataConfig,
                 batch_size: int, training: bool, seed: int = 0, balance: bool = False,
                 cache_dir: str | None = None, name: str = "images",
                 where: list[str] | None = None) -> tf.data.Dataset:
    """Batched uint8 ``(image, y, sample_weight)`` for training (shuffled, full batches), or
    images (plus labels when given) in manifest order for evaluation.

    Args:
        paths, boxes: the images and their RoI boxes.
        labels: ``{task: labels}`` with NaN for unknown (fed as 0 with sample weight 0), or
            None for images only.
        data: the config's data section (size, margin, cache, augmentation settings).
        batch_size: images per batch.
        training: shuffle and drop the last partial batch.
        seed: the shuffle seed.
        balance: weight each task's positives by negatives/positives.
        cache_dir, name: where the file cache goes when ``data.cache`` asks for one.
        where: how errors name each image (``manifest.csv line 7 (image=a.png)``).

    Returns:
        A ``tf.data.Dataset`` of uint8 images (with ``y`` and ``sample_weight`` dicts).

    Raises:
        ImageDecodeError: when iterated, an image that cannot be read, named by ``where``
            (see :func:`roi_images`; the training loop turns it into a ``UsmtlError``).
    """
    images = roi_images(list(paths), list(boxes), data, cache_dir=cache_dir, name=name,
                        where=where)
    if labels is None:
        return images.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    y, weights = targets(labels, balance=balance)
    dataset = tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices((y, weights)))
    if training:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        # Full batches keep shapes static (one compiled step) and BatchNorm statistics sane.
        drop = len(paths) > batch_size
        dataset = dataset.batch(batch_size, drop_remainder=drop)
    else:
        dataset = dataset.batch(batch_size)
    return dataset.map(lambda x, t: (x, *t)).prefetch(tf.data.AUTOTUNE)
