"""Grad-CAM and Grad-CAM++ for any task head of a ``usmtl`` model.

- Grad-CAM: Selvaraju R. R. et al., "Grad-CAM: Visual Explanations from Deep Networks via
  Gradient-based Localization", ICCV 2017. Channel weights are the spatially averaged
  gradients of the score; the map is ``ReLU(sum_k w_k A_k)``.
- Grad-CAM++: Chattopadhay A. et al., "Grad-CAM++: Generalized Gradient-based Visual
  Explanations for Deep Convolutional Networks", WACV 2018. Channel weights are
  ``sum_ij alpha_ij^k ReLU(dY/dA_ij^k)`` with pixel weights
  ``alpha = g^2 / (2 g^2 + sum_ab A_ab g^3)``, ``g = dS/dA`` (the closed form for an
  exponential score ``Y = exp(S)``).

The paper (Li, Guo et al., Front. Physiol. 13:882648, 2022) shows such maps for its
malignancy and ALNM heads (Figure 6) and their mean response against distance from the
image centre (Supplementary Figure S1); see :mod:`usmtl.explain.profile`.

Why a small ``GradientTape`` implementation and not tf-keras-vis: the score of a head here
is its *logit* ``z = w . pooled + b``, recomputed from the Dense head's own kernel, not the
sigmoid output. A confident sigmoid saturates (``dp/dz = p (1 - p)`` goes to 0 in float32,
and to exactly 0 in float16), which turns a Grad-CAM of the probability into noise or an
empty map exactly on the images a reader cares most about; the logit never saturates.
tf-keras-vis wants one score function per model output and differentiates what the model
outputs (the probability, after the hinge layer), so it cannot score the logit without
rebuilding the model; it also offers no control over float16 feature maps. The tape version
is short, does every head of a batch in one forward pass inside one ``tf.function`` (whose
gradient graph holds only the ops between the CAM layer and the heads), and casts the
(possibly float16, under mixed precision) feature maps and gradients to float32 before any
arithmetic. For Grad-CAM, scoring the logit instead of the probability gives the same
normalised map (the two gradients differ by the positive factor ``p (1 - p)``) wherever the
probability is not saturated.

An all-zero map is a finding, not a failure: Grad-CAM keeps only ``ReLU(sum_k w_k A_k)``, the
regions whose features at this layer *raise* the head's logit; when the weighted sum is
``<= 0`` everywhere, nothing at that layer speaks *for* the head, and the map is zero. This
is common for a child head (ALNM, nodal burden) on images the model finds negative for it
(16 of 20 child-head maps in one measurement on the quickstart run). ``usmtl explain``
labels such a panel "no positive evidence at LAYER" and counts it (``cam_all_zero`` in
``explanations.csv``). To look further:

- the negative-evidence map, ``evidence="negative"``: Grad-CAM of the logit of ``1 - p``
  (``-z``, i.e. the gradients negated): where the features speak *against* the head;
- another layer (``layer=``, see :func:`conv_layers`): an earlier block may hold positive
  evidence that the last one cancels;
- Grad-CAM++ (``method="gradcam++"``) weights only the positive gradients, pixel by pixel,
  so its map is all zero only when no gradient at the layer is positive.

Example:
    >>> import numpy as np
    >>> from usmtl.config import config_from_dict
    >>> from usmtl.model.multitask import build_model
    >>> from usmtl.explain.gradcam import GradCam
    >>> cfg = config_from_dict({"tasks": [{"name": "malignancy", "label": "malignant"}],
    ...     "data": {"image_size": 32}, "model": {"backbone": "resnet_small", "weights": "none",
    ...     "small_widths": [8], "small_blocks": [1]}})  # doctest: +SKIP
    >>> cams = GradCam(build_model(cfg), ["malignancy"])  # doctest: +SKIP
    >>> heat, probs = cams(np.zeros((2, 32, 32, 3), np.float32))  # doctest: +SKIP
    >>> heat["malignancy"].shape, float(heat["malignancy"].max()) <= 1.0  # doctest: +SKIP
    ((2, 32, 32), True)
"""

from __future__ import annotations

import numpy as np

from usmtl.errors import UsmtlError

METHODS = ("gradcam", "gradcam++")
EVIDENCE = ("positive", "negative")


class ExplainError(UsmtlError):
    """An unknown task, layer or method, or inputs a CAM cannot be computed for."""


def task_heads(model) -> list[str]:
    """Names of the model's tasks, in model order: its output names (a hinged or
    conditional child's own Dense head is ``<task>_head`` or ``<task>_conditional``); for a
    model without named outputs, its one-unit Dense layers."""
    import keras

    if isinstance(model.output, dict):
        order = {layer.name: i for i, layer in enumerate(model.layers)}
        return sorted(model.output, key=lambda name: order.get(name, len(order)))
    return [layer.name for layer in model.layers
            if isinstance(layer, keras.layers.Dense) and layer.units == 1]


# Layers before the backbone (augmentation, input scaling): 4-D, but a CAM there is no CAM.
# "normalization" is the input scaling's name in models saved before it became
# "input_normalization" (and, in EfficientNet, Keras' own input scaling).
_NOT_CAM_LAYERS = ("augment", "input_normalization", "normalization")


def conv_layers(model) -> list[str]:
    """Names of the layers a CAM can be taken at: every backbone layer with a 4-D
    ``(batch, height, width, channels)`` output, in model order."""
    import keras

    names = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer) or layer.name in _NOT_CAM_LAYERS:
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):  # several outputs or never called
            continue
        if len(shape) == 4:
            names.append(layer.name)
    return names


def _listing(names: list[str], limit: int = 40) -> str:
    """``names`` for an error message; a long list shows the layers nearest the output."""
    if len(names) <= limit:
        return ", ".join(names)
    return f"... ({len(names) - limit} earlier), " + ", ".join(names[-limit:])


def check_tasks(model, tasks) -> list[str]:
    """``tasks`` as a list (``None`` or ``"all"``: every head); raise if one is unknown."""
    valid = task_heads(model)
    if tasks is None or tasks == "all" or list(tasks) == ["all"]:
        return valid
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    unknown = [t for t in tasks if t not in valid]
    if unknown or not tasks:
        raise ExplainError(f"Unknown task for model {model.name!r}; valid tasks: {valid}. "
                           f"Received: {', '.join(unknown) or tasks}")
    return list(dict.fromkeys(tasks))


def check_layer(model, layer: str | None) -> str:
    """The CAM layer: ``layer`` if it is a valid one, else the last convolutional block."""
    from usmtl.model.multitask import last_conv_layer

    if layer is None:
        return last_conv_layer(model)
    valid = conv_layers(model)
    if layer not in valid:
        raise ExplainError(f"Unknown or non-convolutional layer for Grad-CAM in model "
                           f"{model.name!r}; valid layers (4-D outputs): {_listing(valid)}. "
                           f"Received: {layer!r}")
    return layer


def check_evidence(evidence: str) -> str:
    if evidence not in EVIDENCE:
        raise ExplainError(f"Unknown evidence; valid: {list(EVIDENCE)} (positive: what raises the "
                           f"head's logit; negative: what lowers it). Received: {evidence!r}")
    return evidence


def all_zero(maps: np.ndarray) -> np.ndarray:
    """Per map of ``maps`` (``(batch, H, W)`` or one ``(H, W)``): True when it is zero
    everywhere, i.e. no positive evidence for the head at that layer (see the module
    docstring)."""
    maps = np.asarray(maps)
    if maps.ndim == 2:
        return np.bool_(not np.any(maps))
    return ~maps.reshape(len(maps), -1).any(axis=1)


def _normalise(cams: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Upsample each ``(h, w)`` map to ``size`` (bilinear) and scale it to [0, 1] by its own
    maximum; an all-zero (or non-finite) map stays all zero."""
    import cv2

    cams = np.nan_to_num(np.maximum(cams, 0.0), nan=0.0, posinf=0.0).astype(np.float32)
    out = []
    for cam in cams:
        if size is not None and cam.shape != tuple(size):
            cam = cv2.resize(cam, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        peak = float(cam.max()) if cam.size else 0.0
        out.append(np.clip(cam / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(cam))
    return np.stack(out).astype(np.float32)


def cam_from_gradients(features: np.ndarray, grads: np.ndarray, method: str = "gradcam",
                       size: tuple[int, int] | None = None) -> np.ndarray:
    """Class activation maps ``(batch, H, W)`` in [0, 1] from feature maps ``A`` and the
    gradients ``g = dS/dA`` of the score, both ``(batch, h, w, channels)``.

    Pure NumPy in float64, whatever the dtype of the inputs (float16 under mixed
    precision); zero gradients give an all-zero map, never NaN. A map is all zero too when
    nothing at this layer raises the score (the ReLU): pass ``-grads`` for the
    negative-evidence map (the score of ``1 - p``).
    """
    a = np.asarray(features, np.float64)
    g = np.asarray(grads, np.float64)
    if a.shape != g.shape or a.ndim != 4:
        raise ExplainError(f"features and gradients must both be (batch, h, w, channels). "
                           f"Received: {a.shape} and {g.shape}")
    if method == "gradcam":
        weights = g.mean(axis=(1, 2))
    elif method == "gradcam++":
        g2, g3 = g ** 2, g ** 3
        denom = 2.0 * g2 + a.sum(axis=(1, 2), keepdims=True) * g3
        alpha = np.divide(g2, denom, out=np.zeros_like(g2), where=np.abs(denom) > 1e-30)
        weights = (alpha * np.maximum(g, 0.0)).sum(axis=(1, 2))
    else:
        raise ExplainError(f"Unknown CAM method; valid methods: {list(METHODS)}. Received: {method!r}")
    cams = np.einsum("bhwc,bc->bhw", a, weights)
    return _normalise(cams, size)


class GradCam:
    """Grad-CAM / Grad-CAM++ maps of several task heads at one layer, in one forward pass.

    Args:
        model: a ``usmtl`` Keras model (any variant, float32 or mixed precision).
        tasks: head names (``None`` or ``"all"``: every head).
        layer: the CAM layer (default: the backbone's last convolutional block, the layer
            feeding global pooling).
        method: ``"gradcam"`` or ``"gradcam++"``.
        evidence: ``"positive"`` (the usual map: what raises the head's logit ``z``) or
            ``"negative"`` (the map of ``-z``, the logit of ``1 - p``: what lowers it). An
            all-zero positive map means no positive evidence at ``layer`` (module docstring).

    Calling it on ``(batch, size, size, 3)`` images in 0..255 returns
    ``({task: maps (batch, size, size) float32 in [0, 1]}, {task: probabilities (batch,)})``;
    the probabilities are always those of the head (``p``), whatever ``evidence``.
    """

    def __init__(self, model, tasks=None, layer: str | None = None, method: str = "gradcam",
                 evidence: str = "positive"):
        import keras

        if method not in METHODS:
            raise ExplainError(f"Unknown CAM method; valid methods: {list(METHODS)}. "
                               f"Received: {method!r}")
        self.evidence = check_evidence(evidence)
        self.model = model
        self.tasks = check_tasks(model, tasks)
        self.layer = check_layer(model, layer)
        self.method = method
        from usmtl.model.multitask import head_layer

        self.heads = [head_layer(model, t) for t in self.tasks]
        # Every head's input (pooled features, after dropout): the logit is recomputed from it.
        head_inputs = {}
        for head in self.heads:
            head_inputs.setdefault(id(head.input), head.input)
        self._input_ids = list(head_inputs)
        self._sub = keras.Model(model.inputs, [model.get_layer(self.layer).output]
                                + list(head_inputs.values()), name=f"{model.name}_gradcam")

        self._function = None

    def _gradients(self, images):
        """Feature maps, per-task gradients of the logit and logits, all float32 (traced)."""
        import tensorflow as tf

        with tf.GradientTape(persistent=True) as tape:
            outputs = self._sub(images, training=False)
            features, pooled = outputs[0], outputs[1:]
            logits = {}
            for task, head in zip(self.tasks, self.heads):
                x = tf.cast(pooled[self._input_ids.index(id(head.input))], tf.float32)
                z = tf.matmul(x, tf.cast(head.kernel, tf.float32))
                if head.use_bias:
                    z = z + tf.cast(head.bias, tf.float32)
                logits[task] = z[:, 0]
            # Samples are independent in inference mode, so d(sum z)/dA is per-sample dz/dA.
            totals = {task: tf.reduce_sum(z) for task, z in logits.items()}
        grads = {}
        for task in self.tasks:
            g = tape.gradient(totals[task], features)
            if g is None:
                raise ExplainError(f"Layer {self.layer!r} does not feed head {task!r}; choose a "
                                   f"layer of the backbone. Received: layer={self.layer!r}")
            grads[task] = tf.cast(g, tf.float32)
        del tape
        return tf.cast(features, tf.float32), grads, logits

    def __call__(self, images: np.ndarray):
        import tensorflow as tf

        images = np.asarray(images, np.float32)
        if images.ndim != 4:
            raise ExplainError(f"images must be (batch, height, width, 3). Received: {images.shape}")
        if self._function is None:
            # A graph, not eager: the gradient graph is pruned to the ops between the layer
            # and the heads (eager tapes also differentiate the backbone below the layer,
            # which is slower, and on TF 2.21's oneDNN CPU kernels can crash the process).
            self._function = tf.function(self._gradients, reduce_retracing=True)
        features, grads, logits = self._function(tf.convert_to_tensor(images))
        a = features.numpy()
        sign = 1.0 if self.evidence == "positive" else -1.0
        maps, probs = {}, {}
        for task in self.tasks:
            maps[task] = cam_from_gradients(a, sign * grads[task].numpy(), self.method,
                                            images.shape[1:3])
            probs[task] = 1.0 / (1.0 + np.exp(-logits[task].numpy().astype(np.float64)))
        return maps, probs


def compute_cams(model, images: np.ndarray, tasks=None, layer: str | None = None,
                 method: str = "gradcam", batch_size: int = 16, evidence: str = "positive"):
    """:class:`GradCam` over ``images`` in batches: ``({task: maps}, {task: probabilities})``."""
    cam = GradCam(model, tasks, layer, method, evidence)
    maps = {t: [] for t in cam.tasks}
    probs = {t: [] for t in cam.tasks}
    for start in range(0, len(images), batch_size):
        m, p = cam(images[start:start + batch_size])
        for t in cam.tasks:
            maps[t].append(m[t])
            probs[t].append(p[t])
    return ({t: np.concatenate(v) for t, v in maps.items()},
            {t: np.concatenate(v) for t, v in probs.items()})
