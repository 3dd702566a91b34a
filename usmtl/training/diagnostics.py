"""How two heads' losses pull the shared backbone: the gradient cosine, a diagnostic only.

For a parent and a child task, the cosine between the gradients of their BCE terms (each a
mean over the images whose label is known, as in training) with respect to the shared
parameters (every trainable weight except the task heads), and the ratio of their norms.
A negative cosine means the child's loss pushes the shared features against the parent's.
Kurin et al. (NeurIPS 2022) and ForkMerge (NeurIPS 2023) found that such conflict tracks
optimisation, not generalisation: read it beside held-out AUCs, never instead of them.

Example:
    >>> from usmtl.training.diagnostics import gradient_cosine_run
    >>> gradient_cosine_run("runs/x", "manifest.csv", batches=8)  # doctest: +SKIP
    {'parent': 'malignancy', 'child': 'birads5', 'cosine_mean': ..., ...}
"""

from __future__ import annotations

import numpy as np

from usmtl.errors import UsmtlError


def _masked_bce(y, p, w):
    import tensorflow as tf

    p = tf.clip_by_value(tf.cast(tf.reshape(p, [-1]), tf.float32), 1e-7, 1 - 1e-7)
    y = tf.cast(tf.reshape(y, [-1]), tf.float32)
    w = tf.cast(tf.reshape(w, [-1]), tf.float32)
    losses = -(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))
    return tf.reduce_sum(losses * w) / tf.maximum(tf.reduce_sum(w), 1.0)


def gradient_cosine(model, images: np.ndarray, y: dict, w: dict, parent: str, child: str,
                    batch_size: int = 32, training: bool = True) -> dict:
    """Per batch, the cosine of the parent's and child's BCE gradients on the shared weights.

    Args:
        model: a usmtl model with heads named ``parent`` and ``child``.
        images: ``(n, size, size, 3)`` crops.
        y, w: targets and sample weights by task (:func:`usmtl.data.targets.targets`).
        parent, child: the two task names.
        batch_size: images per batch; batches without a known child label are skipped.
        training: run BatchNorm in training mode (batch statistics), as in a training step.

    Returns:
        ``{"parent", "child", "batches", "cosine_mean", "cosine_sd", "negative_share",
        "norm_ratio_median"}`` (child gradient norm over the parent's).

    Raises:
        UsmtlError: a task that the model lacks, or no batch with both labels known.
    """
    import tensorflow as tf

    from usmtl.model.multitask import head_layer

    names = set(model.output) if isinstance(model.output, dict) else set()
    for task in (parent, child):
        if task not in names:
            raise UsmtlError(f"gradient_cosine: the model has no head {task!r}; heads: "
                             f"{sorted(names)}. Received: {task!r}")
    heads = {id(v) for t in (parent, child) for v in head_layer(model, t).trainable_weights}
    heads |= {id(v) for v in model.get_layer(child).trainable_weights}
    shared = [v for v in model.trainable_weights if id(v) not in heads]
    cosines, ratios = [], []
    for start in range(0, len(images), batch_size):
        rows = slice(start, start + batch_size)
        if w[child][rows].sum() == 0 or w[parent][rows].sum() == 0:
            continue
        x = tf.convert_to_tensor(images[rows], tf.float32)
        with tf.GradientTape(persistent=True) as tape:
            out = model(x, training=training)
            losses = {t: _masked_bce(y[t][rows], out[t], w[t][rows]) for t in (parent, child)}
        grads = {t: tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(losses[t], shared)
                               if g is not None], 0) for t in (parent, child)}
        del tape
        a, b = grads[parent].numpy().astype(np.float64), grads[child].numpy().astype(np.float64)
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        if na == 0 or nb == 0:
            continue
        cosines.append(float(a @ b / (na * nb)))
        ratios.append(float(nb / na))
    if not cosines:
        raise UsmtlError(f"gradient_cosine: no batch had known labels for both {parent!r} and "
                         f"{child!r}. Received: {len(images)} images")
    c = np.array(cosines)
    return {"parent": parent, "child": child, "batches": len(c), "cosine_mean": float(c.mean()),
            "cosine_sd": float(c.std(ddof=1)) if len(c) > 1 else float("nan"),
            "negative_share": float((c < 0).mean()),
            "norm_ratio_median": float(np.median(ratios))}


def gradient_cosine_run(run_dir: str, manifest: str, split: str = "train", batches: int = 16,
                        batch_size: int = 32, seed: int = 0) -> dict:
    """:func:`gradient_cosine` for a trained run's kept model on ``batches`` shuffled batches
    of one split of its manifest (the run's split), for its first parent -> child edge."""
    from usmtl.data.crops import Crops
    from usmtl.data.prepare import prepare_data
    from usmtl.data.targets import targets
    from usmtl.run import Run, load_keras_model

    run = Run(run_dir)
    cfg = run.config()
    data = prepare_data(cfg, manifest, run_dir, progress=False, warn=lambda _: None)
    if not data.graph.edges:
        raise UsmtlError(f"{run_dir}: the run has no parent -> child edge. "
                         f"Received tasks: {data.graph.names}")
    parent, child = data.graph.edges[0]
    rows = np.flatnonzero(data.row_split == split)
    rows = np.random.default_rng(seed).permutation(rows)[:batches * batch_size]
    images = Crops.from_manifest(data.manifest, rows, cfg.data).load()
    y, w = targets({t: v[rows] for t, v in data.labels.items()})
    model = load_keras_model(run.best_model)
    return {"run": run_dir, **gradient_cosine(model, images, y, w, parent, child, batch_size)}
