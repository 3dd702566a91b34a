"""The ``tf.data`` input pipeline: decode, crop the RoI, cache, augment, batch, prefetch.

Decoding and cropping happen once (``cache``); each epoch then only shuffles and augments.
Images travel as uint8 until augmentation. Evaluation datasets are deterministic: same
order, no augmentation.

Labels are dictionaries keyed by task name. An unknown label (NaN) is fed as 0 with a
sample weight of 0, so it contributes nothing to its task's loss (Keras rejects
``class_weight`` for multi-output models; per-output sample weights are the way).
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from usmtl.config import AugmentConfig, DataConfig
from usmtl.data.roi import load_roi


def roi_images(paths: list[str], boxes: list, data: DataConfig) -> tf.data.Dataset:
    """A deterministic dataset of ``(size, size, 3)`` uint8 RoI crops, cached per config."""
    size = data.image_size

    def load(index):
        i = int(index)
        return load_roi(paths[i], boxes[i], data.roi_margin, data.square_roi, size)

    dataset = tf.data.Dataset.range(len(paths)).map(
        lambda i: tf.numpy_function(load, [i], tf.uint8, stateful=False),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.map(lambda x: tf.ensure_shape(x, (size, size, 3)))
    if data.cache == "memory":
        dataset = dataset.cache()
    elif data.cache not in ("none", ""):
        dataset = dataset.cache(data.cache)
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


def augment(image: tf.Tensor, cfg: AugmentConfig, size: int) -> tf.Tensor:
    """Random resized crop, flips, brightness, contrast and gamma on one uint8 image;
    returns float32 in [0, 255]."""
    x = tf.cast(image, tf.float32) / 255.0
    lo, hi = cfg.crop_scale
    area = tf.random.uniform([], lo, hi)
    log_aspect = tf.random.uniform([], math.log(cfg.crop_aspect[0]), math.log(cfg.crop_aspect[1]))
    aspect = tf.exp(log_aspect)
    w = tf.minimum(tf.sqrt(area * aspect), 1.0)
    h = tf.minimum(tf.sqrt(area / aspect), 1.0)
    y0 = tf.random.uniform([], 0.0, 1.0 - h + 1e-6)
    x0 = tf.random.uniform([], 0.0, 1.0 - w + 1e-6)
    x = tf.image.crop_and_resize(x[None], [[y0, x0, y0 + h, x0 + w]], [0], [size, size])[0]
    if cfg.horizontal_flip:
        x = tf.image.random_flip_left_right(x)
    if cfg.vertical_flip:
        x = tf.image.random_flip_up_down(x)
    if cfg.brightness > 0:
        x = x + tf.random.uniform([], -cfg.brightness, cfg.brightness)
    if cfg.contrast > 0:
        x = tf.image.random_contrast(x, 1.0 - cfg.contrast, 1.0 + cfg.contrast)
    x = tf.clip_by_value(x, 0.0, 1.0)
    g0, g1 = cfg.gamma
    if g0 != 1.0 or g1 != 1.0:
        x = tf.pow(x, tf.random.uniform([], g0, g1))
    return x * 255.0


def make_dataset(paths, boxes, labels: dict[str, np.ndarray] | None, data: DataConfig,
                 batch_size: int, training: bool, seed: int = 0,
                 balance: bool = False) -> tf.data.Dataset:
    """Batched ``(image, y, sample_weight)`` for training, or images (plus labels when
    given) in manifest order for evaluation."""
    images = roi_images(list(paths), list(boxes), data)
    if labels is None:
        dataset = images.map(lambda x: tf.cast(x, tf.float32))
        return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    y, weights = targets(labels, balance=balance)
    dataset = tf.data.Dataset.zip(images, tf.data.Dataset.from_tensor_slices((y, weights)))
    size = data.image_size
    if training:
        dataset = dataset.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        aug = data.augment
        if aug.enabled:
            dataset = dataset.map(lambda x, t: (augment(x, aug, size), *t),
                                  num_parallel_calls=tf.data.AUTOTUNE)
        else:
            dataset = dataset.map(lambda x, t: (tf.cast(x, tf.float32), *t))
        # Full batches keep shapes static (one compiled step) and BatchNorm statistics sane.
        drop = len(paths) > batch_size
        dataset = dataset.batch(batch_size, drop_remainder=drop)
    else:
        dataset = dataset.map(lambda x, t: (tf.cast(x, tf.float32), *t)).batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)
