"""The inference graph every export is made from.

- :func:`float32_model`: a mixed-precision model is rebuilt under the float32 policy and
  given the same weights (its variables are float32 already), so exports compute in float32
  on any device; a float32 model is used as it is.
- :func:`heads_model`: the task heads as outputs, bypassing the hierarchical hinge layers,
  which only add a training loss and pass their inputs through unchanged.
- :func:`resize_like_roi`: the in-graph resize of a uint8 RoI crop to the model's size, with
  the rule of :func:`usmtl.data.roi.crop_roi`: area averaging when the crop's shorter side is
  larger than the model's size, bilinear otherwise, rounded to whole grey levels (``crop_roi``
  returns uint8). A crop already at the model's size is not resampled at all. On the phantoms
  the in-graph resize is within one grey level of OpenCV's.
"""

from __future__ import annotations

import copy

import keras
import tensorflow as tf

# Largest crop side the serving signature accepts; larger requests are an InvalidArgument.
MAX_SIDE = 4096


def is_mixed(model: keras.Model) -> bool:
    return any(getattr(layer, "dtype_policy", None) is not None
               and layer.dtype_policy.compute_dtype != "float32" for layer in model.layers)


def float32_model(model: keras.Model, cfg) -> tuple[keras.Model, bool]:
    """``(float32 model, was_mixed)``. The rebuild skips pretrained weights (they are
    replaced by the run's own at once), so nothing is downloaded."""
    if not is_mixed(model):
        return model, False
    from usmtl.model.multitask import build_model
    from usmtl.model.precision import precision_policy

    cfg = copy.deepcopy(cfg)
    cfg.model.weights = "none"
    with precision_policy("float32"):
        clone = build_model(cfg)
    clone.set_weights(model.get_weights())
    return clone, True


def heads_model(model: keras.Model, tasks: list[str]) -> keras.Model:
    """``{task: (batch, 1) probability}`` straight from the heads (named after the tasks)."""
    from usmtl.model.multitask import probability_tensor

    try:
        outputs = {name: probability_tensor(model, name) for name in tasks}
    except ValueError:  # heads not named after tasks: use the model's own outputs
        return model
    return keras.Model(model.inputs, outputs, name=f"{model.name}_heads")


def input_dtype(model: keras.Model) -> str:
    """The dtype name of the model's image input (``float32``, ``uint8``), on any backend."""
    return keras.backend.standardize_dtype(model.inputs[0].dtype)


def resize_like_roi(images: tf.Tensor, size: int) -> tf.Tensor:
    """uint8 ``(batch, h, w, 3)`` -> float32 ``(batch, size, size, 3)`` whole grey levels."""
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    message = f"image height and width must be between 1 and {MAX_SIDE} pixels"
    checks = [tf.debugging.assert_greater_equal(tf.minimum(height, width), 1, message=message),
              tf.debugging.assert_less_equal(tf.maximum(height, width), MAX_SIDE, message=message)]
    with tf.control_dependencies(checks):
        images = tf.identity(images)

    def same():
        return tf.cast(images, tf.float32)

    def shrink():
        return tf.image.resize(images, [size, size], method="area")

    def enlarge():
        return tf.image.resize(images, [size, size], method="bilinear")

    resized = tf.case([(tf.logical_and(tf.equal(height, size), tf.equal(width, size)), same),
                       (tf.greater(tf.minimum(height, width), size), shrink)],
                      default=enlarge, exclusive=False)
    resized = tf.clip_by_value(tf.round(resized), 0.0, 255.0)
    return tf.ensure_shape(resized, [None, size, size, 3])


def probabilities(infer: keras.Model, images: tf.Tensor, tasks: list[str]) -> dict:
    """Call the model on float32 pixel values; one ``(batch,)`` probability per task."""
    outputs = infer(tf.cast(images, input_dtype(infer)), training=False)
    return {name: tf.reshape(tf.cast(outputs[name], tf.float32), [-1]) for name in tasks}


def serving_function(infer: keras.Model, tasks: list[str], size: int, fixed_batch: int | None = None):
    """``(function, input spec)``: any-size uint8 crops with in-graph resize, or with
    ``fixed_batch`` a ``(fixed_batch, size, size, 3)`` uint8 input and no resize (TFLite)."""
    if fixed_batch is None:
        spec = tf.TensorSpec([None, None, None, 3], tf.uint8, name="image")

        def serve(image):
            return probabilities(infer, resize_like_roi(image, size), tasks)
    else:
        spec = tf.TensorSpec([fixed_batch, size, size, 3], tf.uint8, name="image")

        def serve(image):
            return probabilities(infer, tf.cast(image, tf.float32), tasks)
    return serve, spec


def write_savedmodel(infer: keras.Model, tasks: list[str], size: int, path: str,
                     fixed_batch: int | None = None) -> None:
    """A SavedModel with one ``serving_default`` signature (see :func:`serving_function`).

    A plain ``tf.Module`` tracks the TensorFlow variables under the Keras ones: Keras'
    ``ExportArchive`` (and ``Model.export``) wrote every variable twice here (Keras 3.15),
    doubling the SavedModel's size.
    """
    serve, spec = serving_function(infer, tasks, size, fixed_batch)
    module = tf.Module()
    module.model_variables = [v.value if hasattr(v, "value") else v for v in infer.variables]
    module.serve = tf.function(serve, input_signature=[spec])
    tf.saved_model.save(module, path,
                        signatures={"serving_default": module.serve.get_concrete_function()})
