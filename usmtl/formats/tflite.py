"""The ``tflite`` format: a LiteRT (TFLite) flatbuffer for phones and edge devices.

Layout (one export per folder)::

    OUT/model.tflite, usmtl_export.json, config.yaml, parity.json

Input ``image: (1, size, size, 3)`` uint8, no resize in the graph; one float32 ``(1,)``
probability per task. Quantization (:func:`usmtl.export.tflite.convert`): ``none``,
``float16``, ``dynamic`` or ``int8`` (calibrated on training crops of a manifest). A failed
export stays where it is, with ``passed: false`` in ``parity.json``.

Opened: a ``.tflite`` file or a TFLite export folder. Runs through LiteRT (``ai_edge_litert``;
``tf.lite.Interpreter``, deprecated, when LiteRT is missing). The loader prepares another batch
when asked (``batch=``: ``usmtl bench predict`` times batches of 32) if the model allows it,
and runs a ``.tflite`` without usmtl's side files or without a signature too.

Default parity tolerances, max |probability difference| vs the Keras float32 model. Measured
(usmtl 0.1.0, TF 2.21, LiteRT 2.3; docs/deployment.md):

- ``none``: float32 with other kernels (XNNPACK): <= 1e-6 on small models, 1.4e-5 on ResNet50;
- ``float16`` (weights rounded to float16): 5.5e-4 on the trained quickstart model, 2.4e-3 on
  MobileNetV3-Small, 2.0e-2 on an untrained ResNet50 (fails, as it should: look at it);
- ``dynamic`` / ``int8``: 1.3e-2 / 1.5e-2 on the trained quickstart model; on models trained
  briefly from scratch on the phantoms, ResNet50 3.3e-3 / 1.8e-2 at 64 px and 1.9e-2 /
  4.6e-2 with its weights at 256 px (int8 was 0.25 and 0.38, and 0.42 in the first
  measurement, while its input normalisation flipped channels: :mod:`usmtl.export.tflite`),
  MobileNetV3-Small (64 px, 10 epochs) 2.2e-2 / 0.13: int8 fails there, rounding
  accumulated over a model whose outputs move by several hundredths per grey level; use
  ``dynamic`` for it.

These are per-model facts, not guarantees: the report prints the differences and AUC changes.
"""

from __future__ import annotations

import os

import numpy as np

from usmtl.errors import UsmtlError
from usmtl.export import artifacts
from usmtl.export.runtime import ExportedModel
from usmtl.formats import Format, Found, register


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tensorflow.lite import Interpreter
        except ImportError:
            raise UsmtlError("Running .tflite models needs LiteRT: pip install 'usmtl[export]' "
                             "(ai-edge-litert). Received: ImportError") from None
    return Interpreter


class _PlainRunner:
    """A signature runner's interface for a ``.tflite`` without signatures: its first
    input, its outputs by tensor name."""

    def __init__(self, interpreter):
        self._interpreter = interpreter
        interpreter.allocate_tensors()
        self._input = interpreter.get_input_details()[0]
        self._outputs = interpreter.get_output_details()

    def get_input_details(self):
        return {self._input["name"]: self._input}

    def __call__(self, **inputs):
        (value,) = inputs.values()
        if tuple(value.shape) != tuple(self._input["shape"]):
            self._interpreter.resize_tensor_input(self._input["index"], list(value.shape))
            self._interpreter.allocate_tensors()
            self._input = self._interpreter.get_input_details()[0]
        self._interpreter.set_tensor(self._input["index"], value)
        self._interpreter.invoke()
        return {o["name"]: self._interpreter.get_tensor(o["index"]) for o in self._outputs}


class TFLiteExport(ExportedModel):
    kind = "tflite"

    def __init__(self, artifact: str, sidecar: str | None = None, threads: int | None = None,
                 batch: int | None = None):
        super().__init__(artifact, sidecar)
        self.threads = threads or os.cpu_count() or 1
        self.runtime_label = f"LiteRT, {self.threads} thread(s)"
        self._open()
        if batch and batch != self._shape[0]:
            try:  # the runner resizes its input to what it is given, if the model allows it
                from usmtl.console import third_party_output

                with third_party_output():
                    self._runner(**{self._input: np.zeros((batch,) + self._shape[1:],
                                                          self._dtype)})
                self._shape = (batch,) + self._shape[1:]
            except Exception:  # a fixed batch: keep it (with a fresh interpreter)
                self._open()

    def _open(self):
        from usmtl.console import third_party_output

        # LiteRT prints "Created TensorFlow Lite XNNPACK delegate" on the first invocation:
        # make that one here, with the output kept off the console.
        with third_party_output():
            self._interpreter = _interpreter_class()(model_path=self.artifact,
                                                     num_threads=self.threads)
            signatures = self._interpreter.get_signature_list()
            if signatures:
                key = ("serving_default" if "serving_default" in signatures
                       else next(iter(signatures)))
                self._runner = self._interpreter.get_signature_runner(key)
            else:
                self._runner = _PlainRunner(self._interpreter)
            (self._input, detail), = self._runner.get_input_details().items()
            self._shape = tuple(int(v) for v in detail["shape"])
            self._dtype = detail["dtype"]
            self._quant = detail.get("quantization", (0.0, 0))
            outputs = self._runner(**{self._input: np.zeros(self._shape, self._dtype)})
        if not self.tasks:  # no side files: the model's outputs, whatever they are
            self.tasks = sorted(outputs)
        if self.image_size is None and self._shape[1] == self._shape[2]:
            self.image_size = self._shape[1]

    def batch_limit(self) -> int:
        return self._shape[0]

    def _feed(self, images):
        if self._dtype == np.uint8:
            return images
        if self._dtype == np.float32:
            return images.astype(np.float32)
        scale, zero = self._quant
        info = np.iinfo(self._dtype)
        return np.clip(np.round(images / scale + zero), info.min, info.max).astype(self._dtype)

    def _run(self, images):
        batch = self._shape[0]
        if images.shape[1:] != self._shape[1:]:
            raise UsmtlError(f"{self.artifact} takes {self._shape[1]}x{self._shape[2]} crops "
                             f"(TFLite exports do not resize). Received: {images.shape[1]}x"
                             f"{images.shape[2]}")
        parts = {name: [] for name in self.tasks}
        for start in range(0, len(images), batch):
            chunk = images[start:start + batch]
            n = len(chunk)
            if n < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - n,) + chunk.shape[1:], chunk.dtype)])
            out = self._runner(**{self._input: self._feed(chunk)})
            for name in self.tasks:
                parts[name].append(np.ravel(out[name])[:n])
        return {name: np.concatenate(v) for name, v in parts.items()}


class TFLiteFormat(Format):
    name = "tflite"
    accepts = "a .tflite file or a TFLite export folder (model.tflite)"
    quantizations = ("none", "float16", "dynamic", "int8")
    tolerances = {"none": 1e-4, "float16": 5e-3, "dynamic": 5e-2, "int8": 1e-1}
    bench_label = "tflite (LiteRT)"

    def recognise(self, path: str) -> Found | None:
        if os.path.isfile(path) and path.lower().endswith(".tflite"):
            return Found(self, path, path, os.path.dirname(os.path.abspath(path)))
        if os.path.isdir(path) and os.path.isfile(os.path.join(path, artifacts.TFLITE_FILE)):
            return Found(self, path, os.path.join(path, artifacts.TFLITE_FILE), path)
        return None

    def load(self, found: Found, threads: int | None = None, batch: int | None = None):
        return TFLiteExport(found.artifact, found.sidecar, threads, batch)

    def check(self, quantize: str, manifest: str | None) -> None:
        if quantize == "int8" and not manifest:
            raise UsmtlError("--quantize int8 needs --manifest: RoI crops of its training rows are "
                             "the representative dataset that calibrates the int8 ranges. "
                             "Received: no --manifest")

    def target(self, out: str, name: str, version: int | None):
        return artifacts.tflite_target(out), None

    def input_description(self, size: int):
        return [1, size, size, 3], f"none: send {size}x{size} crops"

    def write(self, job, folder: str):
        from usmtl.export.tflite import convert

        os.makedirs(folder)
        job.log(f"Converting to TFLite (quantize {job.quantize})")
        blob = convert(job.infer, job.tasks, job.size, job.quantize, job.calibration)
        artifact = os.path.join(folder, artifacts.TFLITE_FILE)
        with open(artifact, "wb") as f:
            f.write(blob)
        if job.quantize == "int8":
            job.meta["calibration_images"] = int(len(job.calibration))
        return artifact, folder


FORMAT = register(TFLiteFormat())
