"""The Keras backend (TensorFlow or JAX), chosen once per process before Keras is imported.

Keras reads ``KERAS_BACKEND`` when it is first imported and cannot switch afterwards, so
``usmtl fit --backend jax`` (and ``experiment``, ``tune``, ``bench train``) calls
:func:`use_backend` first; a notebook sets ``KERAS_BACKEND`` before importing Keras. The
default stays TensorFlow: the design card's ``tf.distribute``, TF Serving and TFLite
exports are TensorFlow's. Nothing here imports Keras unless it is asked which backend runs.

Example:
    >>> from usmtl.backend import BACKENDS
    >>> BACKENDS
    ('tensorflow', 'jax')
"""

from __future__ import annotations

import os
import sys

from usmtl.errors import UsmtlError

BACKENDS = ("tensorflow", "jax")


def use_backend(name: str | None) -> str | None:
    """Make ``name`` the Keras backend of this process; returns it. None leaves the backend
    as configured and returns None without importing Keras (TensorFlow's start-up is
    quieted by the CLI before Keras imports it).

    Raises:
        UsmtlError: an unknown backend, or Keras already imported with another one (the
            message says how to choose it before).
    """
    if name is None:
        return None
    if name not in BACKENDS:
        raise UsmtlError(f"--backend must be one of {list(BACKENDS)}. Received: {name!r}")
    if "keras" in sys.modules:
        current = backend_name()
        if current != name:
            raise UsmtlError(f"Keras is already running on {current} in this process and cannot "
                             f"switch; set KERAS_BACKEND={name} before importing Keras (or run "
                             f"the command in a fresh process). Received: {name!r}")
        return name
    os.environ["KERAS_BACKEND"] = name
    return name


def backend_name() -> str:
    """The Keras backend in use (imports Keras when needed)."""
    import keras

    return keras.backend.backend()
