"""The ``keras`` format: a run directory (its ``checkpoints/best.keras``) or a saved ``.keras``
file. Loader only: it is what the exports are made from and what Grad-CAM needs.

The config (RoI settings, tasks) is the run's ``config.yaml``, found beside the model file or
in a parent folder; the source run is the folder holding it (its ``split.csv``).
"""

from __future__ import annotations

import os

import numpy as np

from usmtl.errors import UsmtlError
from usmtl.export.runtime import Runtime
from usmtl.formats import Format, Found, register


def run_files(model_path: str) -> tuple[str, str]:
    """``(model file, config file)`` for a run directory or a ``.keras`` file in one."""
    from usmtl.run import BEST_MODEL, CONFIG_FILE, Run

    if os.path.isdir(model_path):
        model_file = Run(model_path).model_path("best")
        if not os.path.isfile(model_file):
            raise UsmtlError(f"{model_path}: no {BEST_MODEL}; is it a finished run directory? "
                             f"(An exported model holds saved_model.pb or model.tflite.) "
                             f"Received: {model_path}")
    elif model_path.endswith(".keras"):
        model_file = model_path
    else:
        raise UsmtlError(f"MODEL must be a run directory, a .keras file, a SavedModel export folder "
                         f"or a .tflite file. Received: {model_path}")
    folder = os.path.dirname(os.path.abspath(model_file))
    for _ in range(3):
        candidate = os.path.join(folder, CONFIG_FILE)
        if os.path.isfile(candidate):
            return model_file, candidate
        folder = os.path.dirname(folder)
    raise UsmtlError(f"No {CONFIG_FILE} found beside {model_file} or in its parent folders; "
                     f"it holds the RoI settings the model was trained with")


class KerasModel(Runtime):
    """A Keras model of a run (``keras``: the model itself)."""

    kind = "keras"
    runtime_label = "Keras predict_on_batch"

    def __init__(self, model, cfg, artifact: str):
        import keras

        self.keras = model
        self.cfg = cfg
        self.artifact = artifact
        self.tasks = [t.name for t in cfg.tasks]
        self.image_size = cfg.data.image_size
        # export.graph.input_dtype, without importing TensorFlow (a JAX run predicts here)
        self._dtype = keras.backend.standardize_dtype(model.inputs[0].dtype)

    def _run(self, images):
        out = self.keras.predict_on_batch(np.asarray(images).astype(self._dtype))
        return {name: np.ravel(np.asarray(values)) for name, values in out.items()}

    def predict_crops(self, crops, batch_size: int = 32) -> dict:
        """``{task: probabilities}`` for a :class:`usmtl.data.crops.Crops`, through the
        engine of the Keras backend in use (``tf.data`` on TensorFlow, arrays on JAX)."""
        from usmtl.training.engine import training_engine

        images = training_engine().make_eval_data(crops, self.cfg.data, batch_size,
                                                  name="images")
        # Keras' predict, not the engine's predict_function: Keras keeps its compiled
        # function on the model, so repeated predictions do not trace again.
        if hasattr(images, "images"):  # the JAX engine's arrays
            probs = self.keras.predict(images.images, batch_size=batch_size, verbose=0)
        else:
            probs = self.keras.predict(images, verbose=0)
        return {name: np.ravel(p).astype(float) for name, p in probs.items()}


class KerasFormat(Format):
    name = "keras"
    accepts = "a run directory (its checkpoints/best.keras) or a .keras file in one"
    keras = True
    bench_label = "keras (predict_on_batch)"

    def recognise(self, path: str) -> Found | None:
        from usmtl.run import BEST_MODEL, CHECKPOINTS_DIR, RUN_FILE, Run

        if os.path.isfile(path) and path.endswith(".keras"):
            return Found(self, path, path, None)
        if os.path.isdir(path) and any(os.path.exists(os.path.join(path, entry))
                                       for entry in (BEST_MODEL, CHECKPOINTS_DIR, RUN_FILE)):
            return Found(self, path, Run(path).model_path("best"), None)
        return None

    def describe(self, found: Found, require_side_files: bool = True):
        from usmtl.config import load_config

        _, config_file = run_files(found.path)
        return load_config(config_file), os.path.dirname(config_file)

    def load(self, found: Found, threads: int | None = None, batch: int | None = None):
        from usmtl.config import load_config
        from usmtl.run import load_keras_model

        model_file, config_file = run_files(found.path)
        return KerasModel(load_keras_model(model_file), load_config(config_file), model_file)


FORMAT = register(KerasFormat())
