"""Precise BatchNorm: re-estimate every BatchNormalization layer's moving statistics on the
training crops with the final weights (Wu & Johnson, "Rethinking 'Batch' in BatchNorm",
arXiv 2105.07576, 2021).

During training the moving mean and variance are exponential averages over batches seen
under earlier weights; with momentum 0.99 they trail the weights by about 100 steps, which a
short from-scratch run never outgrows (its inference outputs can be constant). Here each
batch's statistics are averaged with equal weight (momentum ``i / (i + 1)`` at batch ``i``),
computed by the final weights on the training crops as inference sees them: without
augmentation, in the model's own preprocessing.

Example:
    >>> from usmtl.training.precise_bn import precise_bn
    >>> changed = precise_bn(model, batches_of_uint8_crops)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib

import numpy as np


def _layers(model, kind):
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, kind)]


@contextlib.contextmanager
def _no_augmentation(model):
    """The model's augmentation layers pass images through (as cast at inference)."""
    from keras import ops

    from usmtl.model.augment import RoiAugment

    layers = _layers(model, RoiAugment)
    for layer in layers:
        layer.call = lambda images, training=None: ops.cast(images, "float32")
    try:
        yield
    finally:
        for layer in layers:
            del layer.call


def precise_bn(model, batches, max_batches: int | None = None) -> int:
    """Replace the moving statistics of every BatchNormalization layer of ``model`` by their
    equal-weight average over ``batches`` (uint8 crops, as the model takes them); returns the
    number of layers re-estimated (0: nothing to do, the model is unchanged).

    Args:
        model: a Keras model of usmtl (its input: uint8 or float RoI crops).
        batches: an iterable of ``(n, size, size, 3)`` arrays, the training crops.
        max_batches: stop after this many batches (None: all).

    Raises:
        ValueError: no batch.
    """
    import keras

    bns = _layers(model, keras.layers.BatchNormalization)
    if not bns:
        return 0
    saved = [(bn.momentum, bn.moving_mean.numpy(), bn.moving_variance.numpy()) for bn in bns]
    dtype = keras.backend.standardize_dtype(model.inputs[0].dtype)
    seen = 0
    with _no_augmentation(model):
        for i, batch in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            for bn in bns:
                bn.momentum = i / (i + 1)  # batch 0 replaces; later ones average in
            model(np.asarray(batch).astype(dtype), training=True)
            seen += 1
    for bn, (momentum, mean, variance) in zip(bns, saved):
        bn.momentum = momentum
        if not seen:
            bn.moving_mean.assign(mean)
            bn.moving_variance.assign(variance)
    if not seen:
        raise ValueError("precise_bn needs at least one batch of training crops. Received: none")
    return len(bns)
