"""TFLite (LiteRT) conversion: a fixed ``(1, size, size, 3)`` uint8 input, no resize in the
graph (a mobile app resizes its RoI crop itself), one float32 ``(1,)`` probability per task.

Quantization (``tf.lite.TFLiteConverter``):

- ``none``: float32 weights and activations;
- ``float16``: float16 weights, float32 compute;
- ``dynamic``: int8 weights, activations quantized on the fly;
- ``int8``: int8 weights and activations, calibrated on a representative dataset of RoI crops
  from the training rows of a manifest. Input stays uint8 pixels and outputs stay float32
  probabilities, so the calling code is the same for every quantization.

The model is converted from a temporary SavedModel, not from a concrete function: with
Keras 3 models, ``from_concrete_functions`` gave NaN outputs here (TF 2.21).
"""

from __future__ import annotations

import os
import tempfile
import warnings

import numpy as np

from usmtl.errors import UsmtlError


def convert(infer, tasks: list[str], size: int, quantize: str,
            representative: np.ndarray | None = None) -> bytes:
    """The ``.tflite`` flatbuffer of ``infer``. ``representative``: uint8 crops for int8."""
    import tensorflow as tf

    from usmtl.export.graph import write_savedmodel

    if quantize == "int8" and (representative is None or len(representative) == 0):
        raise UsmtlError("int8 quantization needs representative images (a manifest). "
                         "Received: none")
    with tempfile.TemporaryDirectory(prefix="usmtl-tflite-") as tmp:
        saved = os.path.join(tmp, "saved_model")
        write_savedmodel(infer, tasks, size, saved, fixed_batch=1)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            images = np.asarray(representative, np.uint8)

            def dataset():
                for image in images:
                    yield {"image": image[None]}

            converter.representative_dataset = dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        with warnings.catch_warnings():
            # The calibrator uses tf.lite.Interpreter internally and warns about it.
            warnings.simplefilter("ignore", UserWarning)
            try:
                return converter.convert()
            except Exception as exc:  # the converter raises ConverterError and friends
                raise UsmtlError(f"TFLite conversion ({quantize}) failed: {exc}") from exc
