"""How a model is compiled for training: loss, hinge, optimizer and schedule, defined once.

``usmtl fit`` and ``usmtl bench train`` (on either Keras backend) both compile through
:func:`compile_for_training`, so a benchmark measures the step that training runs. Only
Keras is imported here, never TensorFlow: the JAX benchmark runs where TF is not installed.

Example:
    >>> from usmtl.config import load_config
    >>> from usmtl.model.multitask import build_model
    >>> from usmtl.training.compile import compile_for_training
    >>> cfg = load_config("configs/quickstart.yaml")  # doctest: +SKIP
    >>> model = compile_for_training(build_model(cfg), cfg, steps_per_epoch=20)  # doctest: +SKIP
"""

from __future__ import annotations

from usmtl.tasks import TaskGraph


def learning_rate(train_cfg, steps_per_epoch: int):
    """Adam's learning rate: constant, or multiplied by ``lr_decay_factor`` every
    ``lr_decay_every`` epochs (the paper's step schedule)."""
    import keras

    if train_cfg.lr_decay_every <= 0 or train_cfg.lr_decay_every >= train_cfg.epochs:
        return train_cfg.learning_rate
    drops = list(range(train_cfg.lr_decay_every, train_cfg.epochs, train_cfg.lr_decay_every))
    boundaries = [e * steps_per_epoch for e in drops]
    values = [train_cfg.learning_rate * train_cfg.lr_decay_factor ** k for k in range(len(drops) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def compile_for_training(model, cfg, steps_per_epoch: int, jit_compile="auto",
                         steps_per_execution: int = 1):
    """Compile ``model`` with one binary cross-entropy per task head (the hierarchical hinge
    is added by the model itself, through ``add_loss``) and Adam; returns the model.

    Each head's BCE is the mean over the images of the batch whose label is known (sample
    weight > 0), not the sum divided by the whole batch as Keras' default
    ``sum_over_batch_size`` does: with that, a head whose labels are known for 60% of the
    images (ALNM, known for the malignant masses only) would be silently down-weighted to
    60%, and the paper's lambda would weigh the hinge against a smaller BCE. A batch with no
    known label for a head adds 0 for it. A task's ``loss_weight`` (default 1) multiplies its
    BCE.
    """
    import keras

    names = TaskGraph.from_config(cfg.tasks).names
    loss = {name: keras.losses.BinaryCrossentropy(reduction="mean_with_sample_weight", name=f"bce_{name}")
            for name in names}
    weights = {t.name: float(getattr(t, "loss_weight", 1.0)) for t in cfg.tasks}
    model.compile(optimizer=keras.optimizers.Adam(learning_rate(cfg.train, steps_per_epoch)),
                  loss=loss,
                  loss_weights=None if all(w == 1.0 for w in weights.values()) else weights,
                  jit_compile=jit_compile, steps_per_execution=steps_per_execution)
    return model
