"""Which training engine runs a fit: the one of the Keras backend in use.

Two modules offer the same functions (``resolve_strategy``, ``strategy_name``,
``resolve_precision``, ``resolve_jit``, ``resolve_steps_per_execution``, ``gpu_count``,
``devices``, ``make_train_data``, ``make_eval_data``, ``predict_function``, ``train``):
:mod:`usmtl.training.loop` on TensorFlow (``tf.data``, ``tf.distribute``, its own loop)
and :mod:`usmtl.training.jax_loop` on JAX (NumPy batches, Keras' ``fit``, no TensorFlow).
:func:`usmtl.training.fit.fit` asks for the engine here and calls the same functions
either way, so a run directory, its checkpoints, metrics, backup and resume are the same.

The backend itself is chosen before Keras is first imported (:func:`usmtl.backend.use_backend`,
``usmtl fit --backend``, or ``KERAS_BACKEND``).
"""

from __future__ import annotations

from usmtl.errors import UsmtlError


def training_engine():
    """The engine module of the Keras backend in use.

    Raises:
        UsmtlError: a backend usmtl does not train on (torch); names it.
    """
    from usmtl.backend import backend_name

    name = backend_name()
    if name == "jax":
        from usmtl.training import jax_loop

        return jax_loop
    if name == "tensorflow":
        from usmtl.training import loop

        return loop
    raise UsmtlError(f"usmtl trains on the tensorflow or jax Keras backend; set KERAS_BACKEND "
                     f"or pass --backend. Received: {name!r}")
