"""Training-time augmentation as a Keras layer, so it runs inside the compiled training step.

Why a layer: the input pipeline then only has to deliver cached uint8 RoI crops; the
per-epoch work (random resized crop, flips, brightness, contrast, gamma) runs on the
accelerator, batched, inside the same ``tf.function``/``jax.jit`` as the forward pass, and
under XLA when the step is compiled. It is written with ``keras.ops``/``keras.random`` only,
so it runs on the TensorFlow and JAX backends alike.

The random resized crop is separable: each output row samples the input rows at
``y0 + h * i / (S - 1)`` (and likewise for columns), with bilinear weights. The layer builds
the two per-example interpolation matrices and applies them with two batched matrix
products; a horizontal flip is the column matrix reversed. Sampling positions follow
``tf.image.crop_and_resize``, which the host-side pipeline used before.

At inference (``training`` false or unset) the layer returns its input unchanged (cast to
float32), so saved models, exports and predictions are not affected.

Example:
    >>> import numpy as np
    >>> from usmtl.config import AugmentConfig
    >>> from usmtl.model.augment import RoiAugment
    >>> layer = RoiAugment.from_augment_config(AugmentConfig(), seed=0)
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("uint8")
    >>> out = layer(images, training=True)
    >>> tuple(out.shape), bool(np.all((np.asarray(out) >= 0) & (np.asarray(out) <= 255)))
    ((4, 32, 32, 3), True)
"""

from __future__ import annotations

import math

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="usmtl")
class RoiAugment(keras.layers.Layer):
    """Random resized crop, flips, brightness, contrast and gamma on a batch of RGB images
    in [0, 255]; returns float32 in [0, 255] of the same shape.

    Args:
        crop_scale: ``[low, high]`` fraction of the image area kept by the random crop.
        crop_aspect: ``[low, high]`` aspect ratio (width / height) of the crop, sampled
            log-uniformly.
        horizontal_flip, vertical_flip: flip with probability 1/2.
        brightness: add ``U(-b, b)`` (in units of the full range) to every pixel.
        contrast: scale deviations from the per-channel mean by ``U(1 - c, 1 + c)``.
        gamma: ``[low, high]`` range of the exponent applied to the [0, 1] image.
        seed: seed of the layer's random stream.
    """

    def __init__(self, crop_scale=(0.6, 1.0), crop_aspect=(0.75, 1.333), horizontal_flip=True,
                 vertical_flip=False, brightness=0.15, contrast=0.3, gamma=(0.7, 1.4),
                 seed=None, **kwargs):
        # float32 whatever the mixed-precision policy: 0..255 in bfloat16 loses grey levels.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.crop_scale = [float(v) for v in crop_scale]
        self.crop_aspect = [float(v) for v in crop_aspect]
        self.horizontal_flip = bool(horizontal_flip)
        self.vertical_flip = bool(vertical_flip)
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.gamma = [float(v) for v in gamma]
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @classmethod
    def from_augment_config(cls, cfg, seed=None, **kwargs) -> "RoiAugment":
        """The layer for an :class:`usmtl.config.AugmentConfig`."""
        return cls(crop_scale=cfg.crop_scale, crop_aspect=cfg.crop_aspect,
                   horizontal_flip=cfg.horizontal_flip, vertical_flip=cfg.vertical_flip,
                   brightness=cfg.brightness, contrast=cfg.contrast, gamma=cfg.gamma,
                   seed=seed, **kwargs)

    def _uniform(self, batch, low, high):
        return keras.random.uniform((batch,), low, high, dtype="float32",
                                    seed=self.seed_generator)

    @staticmethod
    def _interpolation(start, extent, flip, out_size: int, in_size: int):
        """``(batch, out_size, in_size)`` bilinear weights sampling ``[start, start + extent]``
        (fractions of the input side) at ``out_size`` points, reversed where ``flip``."""
        t = ops.linspace(0.0, 1.0, out_size) if out_size > 1 else ops.zeros((1,))
        t = ops.cast(t, "float32")[None, :]
        if flip is not None:
            t = ops.where(flip[:, None], 1.0 - t, t)
        position = (start[:, None] + extent[:, None] * t) * float(in_size - 1)
        grid = ops.cast(ops.arange(in_size), "float32")[None, None, :]
        return ops.relu(1.0 - ops.abs(position[:, :, None] - grid))

    def call(self, images, training=None):
        x = ops.cast(images, "float32")
        if not training:
            return x
        batch = ops.shape(x)[0]
        height, width = int(x.shape[1]), int(x.shape[2])
        x = x / 255.0

        lo, hi = self.crop_scale
        area = self._uniform(batch, lo, hi)
        a0, a1 = self.crop_aspect
        aspect = ops.exp(self._uniform(batch, math.log(a0), math.log(a1)))
        crop_w = ops.minimum(ops.sqrt(area * aspect), 1.0)
        crop_h = ops.minimum(ops.sqrt(area / aspect), 1.0)
        y0 = self._uniform(batch, 0.0, 1.0) * (1.0 - crop_h)
        x0 = self._uniform(batch, 0.0, 1.0) * (1.0 - crop_w)
        flip_x = self._uniform(batch, 0.0, 1.0) < 0.5 if self.horizontal_flip else None
        flip_y = self._uniform(batch, 0.0, 1.0) < 0.5 if self.vertical_flip else None
        rows = self._interpolation(y0, crop_h, flip_y, height, height)   # (B, H, H)
        cols = self._interpolation(x0, crop_w, flip_x, width, width)     # (B, W, W)
        x = ops.einsum("bih,bhwc->biwc", rows, x)
        x = ops.einsum("bjw,biwc->bijc", cols, x)

        if self.brightness > 0:
            delta = self._uniform(batch, -self.brightness, self.brightness)
            x = x + delta[:, None, None, None]
        if self.contrast > 0:
            factor = self._uniform(batch, 1.0 - self.contrast, 1.0 + self.contrast)
            mean = ops.mean(x, axis=(1, 2), keepdims=True)
            x = (x - mean) * factor[:, None, None, None] + mean
        x = ops.clip(x, 0.0, 1.0)
        g0, g1 = self.gamma
        if g0 != 1.0 or g1 != 1.0:
            x = ops.power(x, self._uniform(batch, g0, g1)[:, None, None, None])
        return x * 255.0

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, images, training=None):
        return keras.KerasTensor(images.shape, "float32")

    def get_config(self):
        return {**super().get_config(), "crop_scale": self.crop_scale,
                "crop_aspect": self.crop_aspect, "horizontal_flip": self.horizontal_flip,
                "vertical_flip": self.vertical_flip, "brightness": self.brightness,
                "contrast": self.contrast, "gamma": self.gamma, "seed": self.seed}
