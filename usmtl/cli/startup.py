"""What a command that runs a model does first: load TensorFlow quietly.

``USMTL_LOG_LEVEL`` (or ``usmtl --verbose``) brings back TensorFlow's C++ logging.
Importing this module imports no TensorFlow.
"""

from __future__ import annotations

import os
import sys

import click

_TF_LEVELS = {"debug": "0", "info": "0", "warning": "1", "error": "2", "quiet": "3"}


def quiet_tensorflow():
    """Load TensorFlow without its start-up noise: the oneDNN and CUDA-stub notes it prints
    before its logging starts, and "failed call to cuInit" on a machine without a GPU, which
    reads like a failure and is none. Commands that run a model call this first.

    Raises:
        click.UsageError: ``USMTL_LOG_LEVEL`` is not a known level.
    """
    level = os.environ.get("USMTL_LOG_LEVEL", "quiet").lower()
    if level not in _TF_LEVELS:
        raise click.UsageError(f"USMTL_LOG_LEVEL must be one of {sorted(_TF_LEVELS)}. "
                               f"Received: {level!r}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _TF_LEVELS[level])
    if level != "quiet" or "tensorflow" in sys.modules:
        return
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return  # a JAX run never imports TensorFlow (usmtl.training.jax_loop)
    # Those first lines are written to file descriptor 2 by C++ before absl logging starts,
    # so no variable reaches them: hide fd 2 while TensorFlow is imported, nothing else.
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            except ImportError:
                pass  # the command reports it when it needs TensorFlow
    finally:
        os.dup2(saved, 2)
        os.close(saved)
