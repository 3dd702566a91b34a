"""Backbones: a feature extractor built *inside* the caller's graph.

Backbones are built with ``input_tensor=`` so their layers live in the top-level functional
graph, not nested as one layer: Grad-CAM tools need to reach the last convolutional block.
The ``build_*`` functions here are the builders that :mod:`usmtl.model.registry` names
(lazily, so that reading a config imports no Keras); the registry, not this module, says
which backbones exist, their normalisation, minimum size and whether weights exist.
"""

from __future__ import annotations

import os

import keras
from keras import layers, ops

from usmtl.errors import ConfigError
# Saved models name RoiAugment too: importing this module (as load_run does) must register it
# without relying on usmtl.model's __init__ doing so.
from usmtl.model import augment as _augment  # noqa: F401
from usmtl.model.registry import NORMALIZATION_MODES


@keras.saving.register_keras_serializable(package="usmtl")
class InputNormalization(keras.layers.Layer):
    """Maps RGB images in [0, 255] to what a backbone expects.

    Modes: ``caffe`` (ResNet50's ImageNet weights: RGB -> BGR, minus the ImageNet mean),
    ``unit`` (divide by 255), ``none`` (the backbone normalises itself, as Keras'
    MobileNetV3 and EfficientNet do).
    """

    MEAN_BGR = (103.939, 116.779, 123.68)

    def __init__(self, mode: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in NORMALIZATION_MODES:
            raise ConfigError(f"InputNormalization mode must be one of {list(NORMALIZATION_MODES)}. "
                              f"Received: {mode!r}")
        self.mode = mode

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        if self.mode == "caffe":
            x = ops.flip(x, axis=-1) - ops.convert_to_tensor(self.MEAN_BGR, dtype=self.compute_dtype)
        elif self.mode == "unit":
            x = x / 255.0
        return x

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


def _weights(weights: str):
    if weights in (None, "none", "None", ""):
        return None
    if weights == "imagenet":
        return "imagenet"
    if not os.path.isfile(weights):
        raise ConfigError(f"model.weights must be 'imagenet', 'none' or an existing file. "
                          f"Received: {weights!r}")
    return weights


def build_resnet50(x, weights, model_cfg):
    return keras.applications.ResNet50(include_top=False, weights=_weights(weights),
                                       input_tensor=x).output


def build_mobilenet_v3_small(x, weights, model_cfg):
    return keras.applications.MobileNetV3Small(include_top=False, weights=_weights(weights),
                                               input_tensor=x, include_preprocessing=True).output


def build_efficientnet_b0(x, weights, model_cfg):
    return keras.applications.EfficientNetB0(include_top=False, weights=_weights(weights),
                                             input_tensor=x).output


# Short CPU runs take a few hundred steps; Keras' default 0.99 leaves the moving statistics
# far from the data by then, and inference-mode predictions collapse to one class.
BN_MOMENTUM = 0.9


def build_resnet_small(x, weights, model_cfg):
    """A small ResNet (basic blocks) for tests and CPU quickstarts: same structure as
    ResNet50 (stem, residual stages, last block) at a fraction of the cost."""
    if _weights(weights) is not None:
        raise ConfigError("resnet_small has no pretrained weights; set model.weights to 'none'. "
                          f"Received: {weights!r}")
    widths, blocks = model_cfg.small_widths, model_cfg.small_blocks
    if len(widths) != len(blocks) or not widths:
        raise ConfigError(f"model.small_widths and model.small_blocks need the same non-zero "
                          f"length. Received: {widths} and {blocks}")
    x = layers.Conv2D(widths[0], 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for s, (width, count) in enumerate(zip(widths, blocks), start=1):
        for b in range(1, count + 1):
            stride = 2 if b == 1 else 1
            name = f"stage{s}_block{b}"
            shortcut = x
            if stride != 1 or x.shape[-1] != width:
                shortcut = layers.Conv2D(width, 1, strides=stride, use_bias=False,
                                         name=f"{name}_proj")(x)
                shortcut = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_proj_bn")(shortcut)
            y = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False,
                              name=f"{name}_conv1")(x)
            y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn1")(y)
            y = layers.Activation("relu", name=f"{name}_relu1")(y)
            y = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
            y = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn2")(y)
            x = layers.Add(name=f"{name}_add")([shortcut, y])
            x = layers.Activation("relu", name=f"{name}_out")(x)
    return x

