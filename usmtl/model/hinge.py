"""The hierarchical hinge (HL) of Li, Guo et al., Front. Physiol. 13:882648 (2022).

A tumour with axillary lymph-node metastasis is always malignant, so the probability of a
child task should not exceed its parent's. The HL is label-free: it penalises every image
whose child probability exceeds the parent's by more than a margin ``m``::

    L_HL = (1/N) * sum_i max(0, p_child_i - p_parent_i - m)
    L_all = L_BCE + lambda * L_HL          (paper: m = 0.1, lambda = 0.05)

With several edges (malignancy -> alnm -> aln_ge_2 -> ...) the edge terms are summed, as
Keras sums the per-head BCE terms.

Example:
    >>> import numpy as np
    >>> from usmtl.model.hinge import HierarchicalHinge, hinge_value
    >>> probs = {"malignancy": np.array([[0.2]]), "alnm": np.array([[0.9]])}
    >>> round(float(hinge_value(probs, [("malignancy", "alnm")], 0.1)), 3)
    0.6
"""

from __future__ import annotations

import keras
from keras import ops


def hinge_value(probabilities: dict, edges, margin: float, parent_gradient: bool = True):
    """Sum over ``(parent, child)`` edges of ``mean(max(0, p_child - p_parent - margin))``.
    Without ``parent_gradient`` the parent's score is a constant to the hinge, which then
    moves the child only."""
    total = 0.0
    for parent, child in edges:
        p_parent = ops.cast(probabilities[parent], "float32")
        if not parent_gradient:
            p_parent = ops.stop_gradient(p_parent)
        p_child = ops.cast(probabilities[child], "float32")
        total = total + ops.mean(ops.relu(p_child - p_parent - margin))
    return total


@keras.saving.register_keras_serializable(package="usmtl")
class ConditionalChild(keras.layers.Layer):
    """``p_child = p_parent * q``: a child consistent with its parent by construction
    (Chen et al. 2020, arXiv 2009.05609). ``q`` is the child's conditional head, trained
    through the product on the child's cohort; the parent enters without gradient, so it
    learns from its own labels only. Computes in float32.

    Example:
        >>> import numpy as np
        >>> round(float(ConditionalChild()([np.array([[0.5]]), np.array([[0.8]])])[0, 0]), 4)
        0.4
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, inputs):
        parent, q = inputs
        return ops.stop_gradient(ops.cast(parent, "float32")) * ops.cast(q, "float32")

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs[1].shape, "float32")


@keras.saving.register_keras_serializable(package="usmtl")
class HingedChild(keras.layers.Layer):
    """One parent -> child edge of the hinge: adds ``weight * mean(max(0, p_child - p_parent -
    margin))`` to the model's losses and returns ``p_child`` unchanged.

    Named after the child task, it makes the model's outputs (and ``model.output_names``) the
    task names; the child's own sigmoid head is the layer before it. The edge terms of a
    chain sum to :func:`hinge_value` over all edges. Computes in float32.

    Args:
        margin: the hinge margin ``m``.
        weight: the loss weight ``lambda``.
        parent_gradient: whether the hinge's gradient reaches the parent (the paper's: yes).

    Example:
        >>> import numpy as np
        >>> layer = HingedChild(margin=0.1, weight=1.0)
        >>> p_child = layer([np.array([[0.2]]), np.array([[0.9]])])
        >>> round(float(p_child[0, 0]), 3), round(float(layer.losses[0]), 3)
        (0.9, 0.6)
    """

    def __init__(self, margin: float = 0.1, weight: float = 0.05, parent_gradient: bool = True,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.margin = float(margin)
        self.weight = float(weight)
        self.parent_gradient = bool(parent_gradient)

    def call(self, inputs):
        parent, child = inputs
        self.add_loss(self.weight * hinge_value({"p": parent, "c": child}, [("p", "c")],
                                                self.margin, self.parent_gradient))
        return ops.cast(child, "float32")

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs[1].shape, "float32")

    def get_config(self):
        config = super().get_config()
        config.update(margin=self.margin, weight=self.weight,
                      parent_gradient=self.parent_gradient)
        return config


@keras.saving.register_keras_serializable(package="usmtl")
class HierarchicalHinge(keras.layers.Layer):
    """Adds ``weight * hinge_value(...)`` to the model's losses; passes its inputs through.

    The layer of models saved before :class:`HingedChild`; kept so that their ``.keras``
    files still load (their ``output_names`` read this layer's name for every task).

    Keras 3 has no model-level ``add_loss`` on symbolic tensors, so the loss is added inside
    ``call``. The layer computes in float32 even under a mixed-precision policy.

    Args:
        edges: ``(parent, child)`` task-name pairs.
        margin: the hinge margin ``m``.
        weight: the loss weight ``lambda``.
        parent_gradient: whether the hinge's gradient reaches the parent (the paper's: yes).
    """

    def __init__(self, edges, margin: float = 0.1, weight: float = 0.05,
                 parent_gradient: bool = True, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.edges = [tuple(edge) for edge in edges]
        self.margin = float(margin)
        self.weight = float(weight)
        self.parent_gradient = bool(parent_gradient)

    def call(self, probabilities):
        self.add_loss(self.weight * hinge_value(probabilities, self.edges, self.margin,
                                                self.parent_gradient))
        return {name: ops.cast(p, "float32") for name, p in probabilities.items()}

    def compute_output_spec(self, probabilities):
        return {name: keras.KerasTensor(p.shape, "float32") for name, p in probabilities.items()}

    def get_config(self):
        config = super().get_config()
        config.update(edges=[list(e) for e in self.edges], margin=self.margin, weight=self.weight,
                      parent_gradient=self.parent_gradient)
        return config
