"""usmtl: multi-task CNN for breast ultrasound.

Reimplements Li C., Guo Y. et al., "A Convolutional Neural Network Based on Ultrasound
Images of Primary Breast Masses: Prediction of Lymph-Node Metastasis in Collaboration With
Classification of Benign and Malignant Tumors", Front. Physiol. 13:882648 (2022).

Importing this package does not import TensorFlow; the modules that need it do.

- ``usmtl.load(path)``: a trained model (run directory, ``.keras`` file or export) with
  ``predict(images or manifest)`` and ``.model`` (:mod:`usmtl.api`).
- ``import usmtl.model``: registers usmtl's custom layers, so that
  ``keras.saving.load_model`` opens any usmtl ``.keras`` file.
- ``usmtl.presets.load("paper")``: a shipped config.
"""

from usmtl._version import __version__

__all__ = ["load", "__version__"]


def load(path, calibrated: bool = True):
    """Open a usmtl model for prediction; see :func:`usmtl.api.load`."""
    from usmtl.api import load as _load

    return _load(path, calibrated)


def __getattr__(name):
    # usmtl.presets without an explicit import (it imports no TensorFlow either).
    if name == "presets":
        import importlib

        return importlib.import_module("usmtl.presets")
    raise AttributeError(f"module 'usmtl' has no attribute {name!r}")
