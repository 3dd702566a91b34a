"""The multi-task network: one shared backbone, one named sigmoid head per task, and the
hierarchical hinge on every parent -> child edge (Li, Guo et al., Front. Physiol. 2022).

See :func:`build_model`.
"""

from __future__ import annotations

import keras
from keras import layers

from usmtl.model.augment import RoiAugment
from usmtl.model.backbones import InputNormalization
from usmtl.model.hinge import ConditionalChild, HingedChild
from usmtl.registry import get_backbone
from usmtl.tasks import TaskGraph

POOL_LAYER = "pool"
# Models saved before HingedChild had one hinge layer of this name wrapping every output.
HINGE_LAYER = "hierarchical_hinge"
AUGMENT_LAYER = "augment"
# Not "normalization": Keras' EfficientNet has a layer of that name, and a functional model
# refuses duplicate names. Models saved before the rename still load (names are not looked
# up on load); Grad-CAM skips both names.
NORMALIZATION_LAYER = "input_normalization"
# model.child_output: conditional names a child's own sigmoid head <child>_conditional; the
# layer named after the task multiplies it by the parent's probability.
CONDITIONAL_SUFFIX = "_conditional"
# With the hinge on, a child's own sigmoid head is <child>_head; the HingedChild layer named
# after the task adds the edge's hinge loss and passes the probability through, so the
# model's outputs are named after the tasks.
HEAD_SUFFIX = "_head"


def build_model(cfg) -> keras.Model:
    """Build the functional model of an :class:`~usmtl.config.ExperimentConfig`: one shared
    backbone, one named sigmoid head per task, and the hierarchical hinge of Li, Guo et al.
    (Front. Physiol. 2022) on every parent -> child edge when ``model.hinge`` is on.

    Inputs are RGB images in [0, 255] of ``data.image_size`` pixels; outputs are a dict
    ``{task name: probability of shape (batch, 1)}``, and ``model.output_names`` are the task
    names. The input is float32, but feed uint8
    where you can (the training pipeline does): Keras casts it inside the compiled function,
    on the device, so a batch crosses from the host in a quarter of the bytes. With
    ``data.augment.enabled`` the first layer is :class:`~usmtl.model.augment.RoiAugment`,
    active in training only. Heads and hinge are float32 whatever the global precision
    policy, so the loss sum never mixes dtypes.

    Args:
        cfg: the config; its tasks name the heads, ``model`` the backbone (a name of
            :func:`usmtl.registry.backbone_names`), weights and hinge.

    Returns:
        An uncompiled ``keras.Model`` (compile it with
        :func:`usmtl.training.compile.compile_for_training`).

    Raises:
        ConfigError: an unknown backbone, weights it cannot load, or a bad task graph.

    Example:
        >>> from usmtl.config import load_config
        >>> from usmtl.model.multitask import build_model
        >>> cfg = load_config("paper", ["model.backbone=resnet_small", "model.weights=none",
        ...                             "data.image_size=64"])
        >>> model = build_model(cfg)
        >>> sorted(model.output_names), type(model.get_layer("alnm")).__name__
        (['alnm', 'malignancy'], 'HingedChild')
    """
    graph = TaskGraph.from_config(cfg.tasks)
    backbone = get_backbone(cfg.model.backbone)
    size = cfg.data.image_size
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    if cfg.data.augment.enabled:
        # Identity at inference; in training it runs inside the compiled step, on the device.
        x = RoiAugment.from_augment_config(cfg.data.augment, seed=cfg.train.seed,
                                           name=AUGMENT_LAYER)(x)
    x = InputNormalization(backbone.normalization, name=NORMALIZATION_LAYER)(x)
    features = backbone.load_builder()(x, cfg.model.weights, cfg.model)
    x = layers.GlobalAveragePooling2D(name=POOL_LAYER)(features)
    if cfg.model.dropout > 0:
        x = layers.Dropout(cfg.model.dropout, name="dropout")(x)
    conditional = cfg.model.child_output == "conditional"
    # A conditional child never exceeds its parent: the hinge would add 0.
    hinged = cfg.model.hinge and not conditional
    outputs = {}
    for task in _parents_first(graph):
        if task.parent is None:
            outputs[task.name] = layers.Dense(1, activation="sigmoid", dtype="float32",
                                              name=task.name)(x)
        elif conditional:
            q = layers.Dense(1, activation="sigmoid", dtype="float32",
                             name=task.name + CONDITIONAL_SUFFIX)(x)
            outputs[task.name] = ConditionalChild(name=task.name)([outputs[task.parent], q])
        elif hinged:
            p = layers.Dense(1, activation="sigmoid", dtype="float32",
                             name=task.name + HEAD_SUFFIX)(x)
            outputs[task.name] = HingedChild(cfg.model.hinge_margin, cfg.model.hinge_weight,
                                             cfg.model.hinge_parent_gradient,
                                             name=task.name)([outputs[task.parent], p])
        else:
            outputs[task.name] = layers.Dense(1, activation="sigmoid", dtype="float32",
                                              name=task.name)(x)
    outputs = {name: outputs[name] for name in graph.names}
    return keras.Model(inputs, outputs, name=cfg.name.replace(" ", "_"))


def _parents_first(graph: TaskGraph) -> list:
    order, done = [], set()
    while len(order) < len(graph.tasks):
        for task in graph.tasks:
            if task.name not in done and (task.parent is None or task.parent in done):
                order.append(task)
                done.add(task.name)
    return order


def head_layer(model: keras.Model, task: str):
    """The Dense layer whose sigmoid is ``task``'s own score: the task's layer, a hinged
    child's ``<task>_head``, or with ``model.child_output: conditional`` a child's conditional
    head (Grad-CAM explains that logit; the product with the parent adds no image evidence of
    the child's own)."""
    layer = model.get_layer(task)
    if isinstance(layer, ConditionalChild):
        return model.get_layer(task + CONDITIONAL_SUFFIX)
    if isinstance(layer, HingedChild):
        return model.get_layer(task + HEAD_SUFFIX)
    return layer


def probability_tensor(model: keras.Model, task: str):
    """The symbolic tensor of ``task``'s probability that adds no training loss: a hinged
    child's head output (the hinge passes it through unchanged), else the task's layer's."""
    layer = model.get_layer(task)
    if isinstance(layer, HingedChild):
        return model.get_layer(task + HEAD_SUFFIX).output
    return layer.output


def last_conv_layer(model: keras.Model) -> str:
    """Name of the layer that feeds global pooling: the backbone's last convolutional block,
    Grad-CAM's default layer."""
    pool = model.get_layer(POOL_LAYER)
    return pool._inbound_nodes[0].input_tensors[0]._keras_history.operation.name
