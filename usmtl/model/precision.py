"""The Keras precision policy as a context manager, so a temporary policy is always undone."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def precision_policy(name: str):
    """Build layers under the Keras dtype policy ``name`` ("float32", "mixed_float16", ...)
    and restore the previous global policy afterwards, even on error.

    Example:
        >>> import keras
        >>> from usmtl.model.precision import precision_policy
        >>> with precision_policy("mixed_float16"):
        ...     layer = keras.layers.Dense(1)
        >>> layer.dtype_policy.name
        'mixed_float16'
    """
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
