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

What int8 does, and what was measured (TF 2.21, ``tf.lite.experimental.QuantizationDebugger``;
ResNet50 and MobileNetV3-Small trained briefly from scratch on the phantoms):

- weights per output channel, activations per tensor, each range the min/max over the
  representative crops (100 by default; 20 to 300 changed nothing systematic);
- a flip of the channels (``REVERSE_V2``) must not reach the int8 graph: the quantizer gives
  its output another scale than its input (0.996 in, 1.481 out) while its kernel copies the
  int8 values, so every pixel is misread (mean error -60 grey levels; the other layers'
  errors are about 0.29 of their quantization step, uniform rounding). ResNet50's ``caffe``
  normalisation did that: int8 max |diff| 0.25 at 64 px and 0.38 at 256 px (0.42 in the
  first measurement). It now swaps channels with a gather, which keeps the scale
  (:class:`usmtl.model.backbones.InputNormalization`): 0.018 and 0.046, all in int8, nothing
  kept in float. :func:`convert` refuses an int8 graph that still has such a flip (a plugin
  backbone's);
- what remains is rounding accumulated over the layers and amplified by the heads. Models
  trained briefly from scratch can have large logits (|logit| up to 30) and outputs that
  move by 0.04-0.08 when the input moves by one grey level; MobileNetV3-Small runs of 48 to
  128 px then missed int8's tolerance (max |diff| 0.13 to 0.54) with no layer to blame:
  keeping any one op, stage or op type in float did not bring them under 0.1, per-tensor
  weights changed nothing, while ``dynamic`` (float activations, 0.02-0.04) and int16
  activations (0.034) passed. Their remedy is ``dynamic``, or a better-trained model.
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
            from usmtl.console import third_party_output

            try:
                with third_party_output():  # the converter's "fully_quantize: ..." lines
                    blob = converter.convert()
            except Exception as exc:  # the converter raises ConverterError and friends
                raise UsmtlError(f"TFLite conversion ({quantize}) failed: {exc}") from exc
            if quantize == "int8":
                _refuse_misquantized_flips(blob)
    return blob


def _refuse_misquantized_flips(blob: bytes) -> None:
    """Raise when an int8 graph holds a flip (``REVERSE_V2``) whose output scale or zero
    point differs from its input's: its kernel copies the int8 values, so the output would
    be misread (see the module docstring). usmtl's own models have none; a registered
    backbone that flips channels with ``keras.ops.flip`` would.

    Raises:
        UsmtlError: such a flip, named, with the fix.
    """
    import tensorflow as tf

    from usmtl.console import third_party_output

    with third_party_output():
        interpreter = tf.lite.Interpreter(model_content=blob)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    bad = []
    for op in interpreter._get_ops_details():  # no public API lists a model's ops
        if op["op_name"] != "REVERSE_V2":
            continue
        source, target = tensors[op["inputs"][0]], tensors[op["outputs"][0]]
        if source["quantization"] != target["quantization"]:
            bad.append(f"{target['name']} (scale, zero point {source['quantization']} in, "
                       f"{target['quantization']} out)")
    if bad:
        raise UsmtlError("int8 conversion misquantizes a flip (REVERSE_V2): its kernel copies "
                         "int8 values that the quantizer gave another scale, so its output "
                         "would be misread. Swap channels with keras.ops.take(x, [2, 1, 0], "
                         f"axis=-1) instead of keras.ops.flip. Received: {'; '.join(bad)}")
