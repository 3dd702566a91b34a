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

import numpy as np
import tensorflow as tf

from usmtl.config import DataConfig
# The reader failures' registry lives with the crops (no TensorFlow there); re-exported.
from usmtl.data.crops import DECODE_MARKER, Crops, ImageDecodeError, decode_failure  # noqa: F401
from usmtl.data.targets import targets

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


def roi_images(paths, boxes, data: DataConfig, cache: str | None = None,
               cache_dir: str | None = None, name: str = "images",
               where: list[str] | None = None, crops: Crops | None = None) -> tf.data.Dataset:
    """A deterministic dataset of ``(size, size, 3)`` uint8 RoI crops, cached as
    :func:`resolve_cache` decides from ``data.cache`` (or ``cache`` when given).

    ``crops``: a :class:`~usmtl.data.crops.Crops` to read (a packed file's, say); default
    the crops of ``paths`` and ``boxes``. ``where``: how errors name each image
    (``manifest.csv line 7 (image=a.png)``); default its path. A reader failure is raised
    as an :class:`ImageDecodeError` naming it (see the module docstring)."""
    size = data.image_size
    if crops is None:
        crops = Crops.from_files(paths, boxes, data, where)

    def load(index):
        return crops.read(int(index))

    dataset = tf.data.Dataset.range(len(crops)).map(
        lambda i: tf.numpy_function(load, [i], tf.uint8, stateful=False),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.map(lambda x: tf.ensure_shape(x, (size, size, 3)))
    where = resolve_cache(cache or data.cache, len(crops), size, cache_dir, name)
    if where == "memory":
        dataset = dataset.cache()
    elif where != "none":
        # A run killed during its first epoch leaves a lock file that would block the cache.
        for lock in glob.glob(glob.escape(where) + "*.lockfile"):
            os.remove(lock)
        dataset = dataset.cache(where)
    return dataset


class TrainEpochs:
    """The training data of each epoch: shuffled full batches whose order is a function of
    ``(seed, epoch)`` alone (:func:`usmtl.seeds.epoch_seed`), so that a resumed fit sees
    the order an uninterrupted one would have. Every epoch reads the same cached crops.

    Args:
        pairs: the unbatched ``(image, (y, sample_weight))`` dataset.
        n: its number of elements.
        batch_size: images per batch.
        seed: the run's seed.
    """

    def __init__(self, pairs: tf.data.Dataset, n: int, batch_size: int, seed: int = 0):
        self.pairs, self.n, self.batch_size, self.seed = pairs, int(n), int(batch_size), int(seed)
        self.element_spec = self.for_epoch(0).element_spec

    def _batched(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        # Full batches keep shapes static (one compiled step) and BatchNorm statistics sane.
        dataset = dataset.batch(self.batch_size, drop_remainder=self.n > self.batch_size)
        return dataset.map(lambda x, t: (x, *t)).prefetch(tf.data.AUTOTUNE)

    def for_epoch(self, epoch: int) -> tf.data.Dataset:
        """The batches of ``epoch`` (0-based), in the same order on every call."""
        from usmtl.seeds import epoch_seed

        return self._batched(self.pairs.shuffle(self.n, seed=epoch_seed(self.seed, epoch),
                                                reshuffle_each_iteration=False))

    def reshuffled(self) -> tf.data.Dataset:
        """One dataset reshuffled at each iteration (for a benchmark, not a resumable fit)."""
        return self._batched(self.pairs.shuffle(self.n, seed=self.seed,
                                                reshuffle_each_iteration=True))


def make_train_epochs(labels: dict[str, np.ndarray], data: DataConfig, batch_size: int,
                      seed: int = 0, balance: bool = False, cache_dir: str | None = None,
                      name: str = "images", crops: Crops | None = None,
                      paths=None, boxes=None, where: list[str] | None = None) -> TrainEpochs:
    """The :class:`TrainEpochs` of ``crops`` (or of ``paths`` and ``boxes``) and ``labels``;
    the arguments are those of :func:`make_dataset`."""
    images = roi_images(paths, boxes, data, cache_dir=cache_dir, name=name, where=where,
                        crops=crops)
    y, weights = targets(labels, balance=balance)
    pairs = tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices((y, weights)))
    return TrainEpochs(pairs, len(y[next(iter(y))]), batch_size, seed)


def make_dataset(paths, boxes, labels: dict[str, np.ndarray] | None, data: DataConfig,
                 batch_size: int, training: bool, seed: int = 0, balance: bool = False,
                 cache_dir: str | None = None, name: str = "images",
                 where: list[str] | None = None, crops: Crops | None = None) -> tf.data.Dataset:
    """Batched uint8 ``(image, y, sample_weight)`` for training (shuffled, full batches), or
    images (plus labels when given) in manifest order for evaluation.

    Args:
        paths, boxes: the images and their RoI boxes.
        labels: ``{task: labels}`` with NaN for unknown (fed as 0 with sample weight 0), or
            None for images only.
        data: the config's data section (size, margin, cache, augmentation settings).
        batch_size: images per batch.
        training: shuffle (again at each iteration) and drop the last partial batch; a
            resumable fit uses :func:`make_train_epochs` instead.
        seed: the shuffle seed.
        balance: weight each task's positives by negatives/positives.
        cache_dir, name: where the file cache goes when ``data.cache`` asks for one.
        where: how errors name each image (``manifest.csv line 7 (image=a.png)``).
        crops: the :class:`~usmtl.data.crops.Crops` to read instead of ``paths`` and
            ``boxes`` (a packed file's).

    Returns:
        A ``tf.data.Dataset`` of uint8 images (with ``y`` and ``sample_weight`` dicts).

    Raises:
        ImageDecodeError: when iterated, an image that cannot be read, named by ``where``
            (see :func:`roi_images`; the training loop turns it into a ``UsmtlError``).
    """
    if labels is not None and training:
        return make_train_epochs(labels, data, batch_size, seed, balance, cache_dir, name,
                                 crops, paths, boxes, where).reshuffled()
    images = roi_images(paths, boxes, data, cache_dir=cache_dir, name=name, where=where,
                        crops=crops)
    if labels is None:
        return images.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    y, weights = targets(labels, balance=balance)
    dataset = tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices((y, weights)))
    return dataset.batch(batch_size).map(lambda x, t: (x, *t)).prefetch(tf.data.AUTOTUNE)
