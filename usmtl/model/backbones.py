"""Backbones: a feature extractor built *inside* the caller's graph.

Backbones are built with ``input_tensor=`` so their layers live in the top-level functional
graph, not nested as one layer: Grad-CAM tools need to reach the last convolutional block.
The ``build_*`` functions here are the builders that :mod:`usmtl.registry` names
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
from usmtl.registry import NORMALIZATION_MODES


@keras.saving.register_keras_serializable(package="usmtl")
class InputNormalization(keras.layers.Layer):
    """Maps RGB images in [0, 255] to what a backbone expects.

    Modes: ``caffe`` (ResNet50's ImageNet weights: RGB -> BGR, minus the ImageNet mean),
    ``unit`` (divide by 255), ``none`` (the backbone normalises itself, as Keras'
    MobileNetV3 and EfficientNet do).
    """

    MEAN_BGR = (103.939, 116.779, 123.68)
    # RGB -> BGR is a gather, not ops.flip: TFLite's int8 quantizer gives a flip (REVERSE_V2)
    # an output scale other than its input's while its kernel copies the int8 values
    # unchanged, so every pixel was misread (mean error -60 grey levels in the
    # QuantizationDebugger; int8 ResNet50 max |diff| 0.44 -> 0.12 at 32 px, 0.079 -> 0.009
    # at 64 px). A gather keeps its input's scale; in float the values are the same.
    BGR = (2, 1, 0)

    def __init__(self, mode: str = "caffe", **kwargs):
        super().__init__(**kwargs)
        if mode not in NORMALIZATION_MODES:
            raise ConfigError(f"InputNormalization mode must be one of {list(NORMALIZATION_MODES)}. "
                              f"Received: {mode!r}")
        self.mode = mode

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        if self.mode == "caffe":
            x = ops.take(x, self.BGR, axis=-1)
            x = x - ops.convert_to_tensor(self.MEAN_BGR, dtype=self.compute_dtype)
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


# BatchNormalization momentum of a backbone trained from scratch (model.bn_momentum: auto).
# Inference uses the moving statistics, which trail the weights by about 1 / (1 - momentum)
# steps: with Keras' 0.99 (ResNet50, EfficientNet) or 0.999 (MobileNetV3), a run of a few
# hundred steps keeps statistics of far earlier weights (and of the initial 0 and 1), the
# error compounds layer after layer, and every image gets the same score. Measured on the
# phantoms (32-64 px, 20-40 steps): 0.9 settles ResNet50 and the small ResNet; MobileNetV3
# and EfficientNet still gave near-constant scores at 0.9 (SD 1e-4 and 7e-4 over the test
# images after 40 steps) and settle at 0.7.
BN_MOMENTUM = 0.9
BN_MOMENTUM_DEEP = 0.7


def bn_momentum(model_cfg, weights, from_scratch: float) -> float | None:
    """The BatchNormalization momentum a backbone is built with.

    Args:
        model_cfg: the :class:`~usmtl.config.ModelConfig`; its ``bn_momentum`` is ``"auto"``
            or a number in [0, 1).
        weights: the raw ``model.weights`` value.
        from_scratch: the backbone's momentum for random initial weights.

    Returns:
        ``model.bn_momentum`` when it is a number; with ``auto``, ``from_scratch`` for
        random initial weights and None (keep the momentum of Keras' application, whose
        statistics start from the pretrained ones) for pretrained weights.
    """
    value = getattr(model_cfg, "bn_momentum", "auto")
    if value != "auto":
        return float(value)
    return from_scratch if _weights(weights) is None else None


def _set_bn_momentum(backbone: keras.Model, momentum: float | None) -> keras.KerasTensor:
    """``backbone``'s output after giving its BatchNormalization layers ``momentum``.

    The layers are not called yet (that happens when the caller's model is traced), so
    they update with the new value; it is in their config, so a saved ``.keras`` reloads
    with it.
    """
    if momentum is not None:
        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = momentum
    return backbone.output


def build_resnet50(x, weights, model_cfg):
    net = keras.applications.ResNet50(include_top=False, weights=_weights(weights), input_tensor=x)
    return _set_bn_momentum(net, bn_momentum(model_cfg, weights, BN_MOMENTUM))


def build_mobilenet_v3_small(x, weights, model_cfg):
    net = keras.applications.MobileNetV3Small(include_top=False, weights=_weights(weights),
                                              input_tensor=x, include_preprocessing=True)
    return _set_bn_momentum(net, bn_momentum(model_cfg, weights, BN_MOMENTUM_DEEP))


def build_efficientnet_b0(x, weights, model_cfg):
    net = keras.applications.EfficientNetB0(include_top=False, weights=_weights(weights),
                                            input_tensor=x)
    return _set_bn_momentum(net, bn_momentum(model_cfg, weights, BN_MOMENTUM_DEEP))


def build_resnet_small(x, weights, model_cfg):
    """A small ResNet (basic blocks) for tests and CPU quickstarts: same structure as
    ResNet50 (stem, residual stages, last block) at a fraction of the cost."""
    if _weights(weights) is not None:
        raise ConfigError("resnet_small has no pretrained weights; set model.weights to 'none'. "
                          f"Received: {weights!r}")
    momentum = bn_momentum(model_cfg, weights, BN_MOMENTUM)
    widths, blocks = model_cfg.small_widths, model_cfg.small_blocks
    if len(widths) != len(blocks) or not widths:
        raise ConfigError(f"model.small_widths and model.small_blocks need the same non-zero "
                          f"length. Received: {widths} and {blocks}")
    x = layers.Conv2D(widths[0], 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(momentum=momentum, name="stem_bn")(x)
    x = layers.Activation("relu", name="stem_relu")(x)
    for s, (width, count) in enumerate(zip(widths, blocks), start=1):
        for b in range(1, count + 1):
            stride = 2 if b == 1 else 1
            name = f"stage{s}_block{b}"
            shortcut = x
            if stride != 1 or x.shape[-1] != width:
                shortcut = layers.Conv2D(width, 1, strides=stride, use_bias=False,
                                         name=f"{name}_proj")(x)
                shortcut = layers.BatchNormalization(momentum=momentum, name=f"{name}_proj_bn")(shortcut)
            y = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False,
                              name=f"{name}_conv1")(x)
            y = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn1")(y)
            y = layers.Activation("relu", name=f"{name}_relu1")(y)
            y = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
            y = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn2")(y)
            x = layers.Add(name=f"{name}_add")([shortcut, y])
            x = layers.Activation("relu", name=f"{name}_out")(x)
    return x

