"""Deployment exports with parity checks: a TF Serving SavedModel and TFLite (LiteRT) files,
and any other export format registered in :mod:`usmtl.formats` (each format is one module
there: its layout, writer, loader, tolerances).

- SavedModel (``OUT/<name>/<version>/``): one ``serving_default`` signature taking a batch of
  uint8 RoI crops ``image: (batch, h, w, 3)`` of any size (resized in the graph as training
  resized them) and returning one float32 probability ``(batch,)`` per task, named after it.
- TFLite (``OUT/model.tflite``): input ``image: (1, size, size, 3)`` uint8, the same named
  outputs; quantization ``none``, ``float16``, ``dynamic`` or ``int8`` (calibrated on training
  crops of a manifest).

Normalisation is inside the model, so a client sends pixels and nothing else. A
mixed-precision run is exported as a float32 copy. Each export is loaded back and compared
with the Keras model (:mod:`usmtl.export.parity`); ``usmtl predict`` runs exports with the same
output as for a run (:mod:`usmtl.export.runtime`).

Example:
    >>> from usmtl.export import export
    >>> result = export("runs/quickstart", "tflite", "exports/quickstart-int8",
    ...                 quantize="int8", manifest="demo/manifest.csv")  # doctest: +SKIP
    >>> result.report["outputs"]["malignancy"]["max_abs_diff"] < 0.1  # doctest: +SKIP
    True

Importing this package does not import TensorFlow.
"""

from usmtl.export.core import ExportResult, export

__all__ = ["export", "ExportResult", "FORMATS", "QUANTIZATIONS", "TOLERANCES", "open_export"]


def __getattr__(name):
    """``FORMATS`` (export format names), ``QUANTIZATIONS`` and ``TOLERANCES`` (defaults,
    :func:`usmtl.export.parity.tolerances`), read from the registry when asked."""
    from usmtl import formats

    if name == "FORMATS":
        return tuple(f.name for f in formats.export_formats())
    if name == "QUANTIZATIONS":
        return formats.quantizations()
    if name == "TOLERANCES":
        from usmtl.export.parity import tolerances

        return tolerances()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_export(path: str, threads: int | None = None):
    """See :func:`usmtl.export.runtime.open_export`."""
    from usmtl.export.runtime import open_export as _open

    return _open(path, threads)
