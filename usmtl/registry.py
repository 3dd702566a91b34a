"""The backbone registry: one entry per backbone a config may name, readable without Keras.

Modelled on keras-hub's presets: an entry is plain metadata plus a *lazy* reference to the
function that builds the backbone, so :mod:`usmtl.config` can validate ``model.backbone``,
``model.weights`` and ``data.image_size`` against it without importing TensorFlow or Keras
(``usmtl --help`` and config loading stay fast). This module is the only list of backbone
names: the model builder, config validation and the model contract test
(``tests/test_model_contract.py``, parameterised over :func:`backbone_names`) all read it,
so registering a backbone here is all it takes to make it configurable and tested.

A builder is called as ``builder(x, weights, model_cfg)`` inside the caller's functional
graph: ``x`` the normalised ``(batch, size, size, 3)`` Keras tensor, ``weights`` the raw
``model.weights`` value, ``model_cfg`` the :class:`~usmtl.config.ModelConfig`; it returns
the 4-D feature map that global pooling reads (Grad-CAM's default layer).

Example:
    >>> from usmtl.registry import backbone_names, get_backbone
    >>> "resnet50" in backbone_names()
    True
    >>> info = get_backbone("resnet_small")
    >>> info.min_input_size, info.pretrained_weights, info.normalization
    (32, False, 'unit')
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Union

from usmtl.errors import ConfigError

# How InputNormalization maps [0, 255] RGB for a backbone: "caffe" (RGB -> BGR minus the
# ImageNet mean, ResNet50's weights), "unit" (divide by 255), "none" (the backbone rescales
# its own input, as Keras' MobileNetV3 and EfficientNet do).
NORMALIZATION_MODES = ("caffe", "unit", "none")


@dataclasses.dataclass(frozen=True)
class BackboneInfo:
    """What the rest of usmtl needs to know about a backbone, without building it.

    Attributes:
        name: the ``model.backbone`` value that selects it.
        builder: ``"package.module:function"`` (imported on first use) or the function
            itself; see the module docstring for its signature.
        normalization: one of :data:`NORMALIZATION_MODES`.
        pretrained_weights: whether ``model.weights: imagenet`` can be loaded.
        min_input_size: the smallest ``data.image_size`` the backbone builds at.
        description: one line for listings and error messages.
    """

    name: str
    builder: Union[str, Callable]
    normalization: str
    pretrained_weights: bool
    min_input_size: int
    description: str = ""

    def load_builder(self) -> Callable:
        """The builder function, importing its module if ``builder`` is a string.

        Returns:
            The callable ``builder(x, weights, model_cfg) -> features``.

        Raises:
            ConfigError: the module cannot be imported or has no such function.

        Example:
            >>> from usmtl.registry import BackboneInfo
            >>> info = BackboneInfo("demo", "math:sqrt", "unit", False, 32)
            >>> info.load_builder()(4.0)
            2.0
        """
        if callable(self.builder):
            return self.builder
        module_name, _, attr = self.builder.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"Backbone {self.name!r}: cannot load its builder ({exc}). "
                              f"Received: {self.builder!r}") from None


_REGISTRY: dict[str, BackboneInfo] = {}


def register_backbone(name: str, builder: Union[str, Callable], *, normalization: str,
                      pretrained_weights: bool, min_input_size: int, description: str = "",
                      replace: bool = False) -> BackboneInfo:
    """Make a backbone selectable as ``model.backbone: <name>``.

    Args:
        name: the config name; letters, digits and underscores.
        builder: ``"package.module:function"`` (preferred: nothing is imported until a model
            is built) or a callable ``builder(x, weights, model_cfg) -> features``.
        normalization: one of :data:`NORMALIZATION_MODES`.
        pretrained_weights: whether ImageNet weights exist (``model.weights: imagenet``).
        min_input_size: the smallest ``data.image_size`` the backbone builds at (>= 1).
        description: one line for listings.
        replace: allow overwriting an existing entry (otherwise that is an error, so two
            plug-ins cannot silently shadow each other).

    Returns:
        The registered :class:`BackboneInfo`.

    Raises:
        ValueError: an invalid field, or ``name`` taken and ``replace`` false.

    Example:
        >>> from usmtl.registry import register_backbone, unregister_backbone
        >>> info = register_backbone("my_net", "my_package.nets:build_my_net",
        ...                          normalization="unit", pretrained_weights=False,
        ...                          min_input_size=64)
        >>> info.min_input_size
        64
        >>> unregister_backbone("my_net")
    """
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        raise ValueError(f"A backbone name must be letters, digits and underscores. "
                         f"Received: {name!r}")
    if name in _REGISTRY and not replace:
        raise ValueError(f"Backbone {name!r} is already registered; pass replace=True to "
                         f"overwrite it. Received: {builder!r}")
    if isinstance(builder, str):
        module_name, colon, attr = builder.partition(":")
        if not (module_name and colon and attr):
            raise ValueError(f"Backbone {name!r}: builder must be 'package.module:function' or "
                             f"a callable. Received: {builder!r}")
    elif not callable(builder):
        raise ValueError(f"Backbone {name!r}: builder must be 'package.module:function' or a "
                         f"callable. Received: {builder!r}")
    if normalization not in NORMALIZATION_MODES:
        raise ValueError(f"Backbone {name!r}: normalization must be one of "
                         f"{list(NORMALIZATION_MODES)}. Received: {normalization!r}")
    if not isinstance(min_input_size, int) or isinstance(min_input_size, bool) or min_input_size < 1:
        raise ValueError(f"Backbone {name!r}: min_input_size must be an integer >= 1. "
                         f"Received: {min_input_size!r}")
    info = BackboneInfo(name, builder, normalization, bool(pretrained_weights), min_input_size,
                        description)
    _REGISTRY[name] = info
    return info


def unregister_backbone(name: str) -> None:
    """Remove a registered backbone (for tests and plug-ins); unknown names are ignored.

    Args:
        name: the config name.

    Example:
        >>> from usmtl.registry import unregister_backbone
        >>> unregister_backbone("never_registered")
    """
    _REGISTRY.pop(name, None)


def backbone_names() -> tuple[str, ...]:
    """The registered backbone names, in registration order.

    Returns:
        A tuple of names.

    Example:
        >>> from usmtl.registry import backbone_names
        >>> backbone_names()[:2]
        ('resnet50', 'resnet_small')
    """
    return tuple(_REGISTRY)


def get_backbone(name: str) -> BackboneInfo:
    """The registry entry of ``name``.

    Args:
        name: a ``model.backbone`` value.

    Returns:
        Its :class:`BackboneInfo`.

    Raises:
        ConfigError: ``name`` is not registered; the message lists the valid names and ends
            with ``Received: <name>``.

    Example:
        >>> from usmtl.registry import get_backbone
        >>> get_backbone("efficientnet_b0").normalization
        'none'
        >>> get_backbone("vgg16")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        usmtl.errors.ConfigError: Unknown backbone; valid backbones: ['resnet50', ...]. Received: 'vgg16'
    """
    info = _REGISTRY.get(name) if isinstance(name, str) else None
    if info is None:
        raise ConfigError(f"Unknown backbone; valid backbones: {list(_REGISTRY)}. "
                          f"Received: {name!r}")
    return info


# ---------------------------------------------------------------------------------------
# Built-in backbones (builders in usmtl.model.backbones)
# ---------------------------------------------------------------------------------------
# Minimum sizes: Keras' ResNet50 and EfficientNet pass min_size=32 to
# imagenet_utils.obtain_input_shape, and MobileNetV3 raises below 32x32 itself (Keras 3.15
# sources); five stride-2 stages bring 32 px down to a 1x1 feature map. resnet_small keeps
# the bound config validation used before the registry.

register_backbone(
    "resnet50", "usmtl.model.backbones:build_resnet50", normalization="caffe",
    pretrained_weights=True, min_input_size=32,
    description="Keras ResNet50 (the paper's backbone), 2048 features")
register_backbone(
    "resnet_small", "usmtl.model.backbones:build_resnet_small", normalization="unit",
    pretrained_weights=False, min_input_size=32,
    description="small ResNet for tests and CPU quickstarts (model.small_widths/small_blocks)")
register_backbone(
    "mobilenet_v3_small", "usmtl.model.backbones:build_mobilenet_v3_small", normalization="none",
    pretrained_weights=True, min_input_size=32,
    description="Keras MobileNetV3-Small, for mobile exports, 576 features")
register_backbone(
    "efficientnet_b0", "usmtl.model.backbones:build_efficientnet_b0", normalization="none",
    pretrained_weights=True, min_input_size=32,
    description="Keras EfficientNet-B0, 1280 features")
