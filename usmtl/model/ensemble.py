"""An ensemble of trained models as one Keras model, for export: every member sees the same
image, and each task's output combines the members' probabilities by the ensemble's rule
(:mod:`usmtl.evaluation.ensemble`: ``mean`` of probabilities, or ``logit``, the sigmoid of
the mean logit).

Example:
    >>> import numpy as np
    >>> from usmtl.model.ensemble import EnsembleCombine
    >>> layer = EnsembleCombine("mean")
    >>> float(layer([np.array([[0.2]]), np.array([[0.4]])])[0, 0])  # doctest: +ELLIPSIS
    0.3...
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="usmtl")
class EnsembleCombine(keras.layers.Layer):
    """The members' ``(batch, 1)`` probabilities of one task as one, by ``rule``."""

    def __init__(self, rule: str = "mean", **kwargs):
        from usmtl.evaluation.ensemble import check_rule

        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.rule = check_rule(rule)

    def call(self, inputs):
        stack = ops.stack([ops.cast(p, "float32") for p in inputs], axis=0)
        if self.rule == "mean":
            return ops.mean(stack, axis=0)
        p = ops.clip(stack, 1e-7, 1 - 1e-7)
        return ops.sigmoid(ops.mean(ops.log(p) - ops.log1p(-p), axis=0))

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs[0].shape, "float32")

    def get_config(self):
        return {**super().get_config(), "rule": self.rule}


@keras.saving.register_keras_serializable(package="usmtl")
class Mirror(keras.layers.Layer):
    """The image mirrored left to right, as a gather along the width: TFLite's int8
    quantizer mishandles REVERSE_V2, which ``x[:, :, ::-1]`` becomes."""

    def call(self, images):
        width = images.shape[2]
        return ops.take(images, ops.arange(width - 1, -1, -1, dtype="int32"), axis=2)

    def compute_output_spec(self, images):
        return keras.KerasTensor(images.shape, images.dtype)


def ensemble_model(members, tasks, rule: str = "mean") -> keras.Model:
    """One Keras model from ``members`` (float32 Keras models with one image input and an
    output per task, named after it): ``{task: (batch, 1)}``, combined by ``rule``.

    Raises:
        ValueError: members whose inputs differ in shape or dtype.
    """
    first = members[0].inputs[0]
    for k, m in enumerate(members, start=1):
        if tuple(m.inputs[0].shape[1:]) != tuple(first.shape[1:]) or m.inputs[0].dtype != first.dtype:
            raise ValueError(f"Ensemble member {k} takes {m.inputs[0].dtype} "
                             f"{tuple(m.inputs[0].shape)}, member 1 {first.dtype} "
                             f"{tuple(first.shape)}. Received: members of different inputs")
    image = keras.Input(shape=tuple(first.shape[1:]), dtype=first.dtype, name="image")
    outputs = []
    for k, m in enumerate(members, start=1):
        struct = m.output  # the heads model's {task: tensor}; a one-task model's bare tensor
        struct = struct if isinstance(struct, dict) else dict(zip(tasks, m.outputs))
        renamed = keras.Model(m.inputs, struct, name=f"member_{k}")  # one name per member
        outputs.append(renamed(image))
    combined = {t: EnsembleCombine(rule, name=t)([o[t] for o in outputs]) for t in tasks}
    return keras.Model(image, combined, name="usmtl_ensemble")
