"""Running exported models: a SavedModel through its ``serving_default`` signature, a
``.tflite`` file through LiteRT (``ai_edge_litert``; ``tf.lite.Interpreter`` is deprecated).

Both take uint8 RoI crops and return ``{task: probabilities}`` in the export's task order,
which is what :mod:`usmtl.predict` and the parity report need.

Example:
    >>> from usmtl.export.runtime import open_export
    >>> model = open_export("exports/quickstart/1")  # doctest: +SKIP
    >>> model.predict(crops)["malignancy"].shape  # doctest: +SKIP
    (10,)
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from usmtl.errors import UsmtlError
from usmtl.export.artifacts import CONFIG_FILE, find_export, read_metadata


class ExportedModel:
    """An export and its description (``meta``: ``usmtl_export.json``; ``cfg``: the run's
    config)."""

    kind = ""

    def __init__(self, artifact: str, sidecar: str):
        from usmtl.config import load_config

        self.artifact = artifact
        self.sidecar = sidecar
        self.meta = read_metadata(sidecar)
        config = os.path.join(sidecar, CONFIG_FILE)
        if not os.path.isfile(config):
            raise UsmtlError(f"{config} is missing: it holds the RoI settings the model was "
                             f"trained with. Received: {artifact}")
        self.cfg = load_config(config)
        self.tasks = list(self.meta["tasks"])
        self.edges = [tuple(edge) for edge in self.meta["edges"]]
        self.image_size = int(self.meta["input"]["image_size"])

    def _run(self, images: np.ndarray) -> dict:
        raise NotImplementedError

    def batch_limit(self) -> int | None:
        return None

    def predict(self, images, batch_size: int = 32) -> dict:
        """``{task: (n,) float}`` for uint8 crops ``(n, h, w, 3)`` (an iterable of batches
        works too)."""
        if isinstance(images, np.ndarray):
            images = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
        parts = {name: [] for name in self.tasks}
        for batch in images:
            batch = np.asarray(batch)
            if batch.dtype != np.uint8:
                raise UsmtlError(f"Exported models take uint8 images. Received: {batch.dtype}")
            for name, values in self._run(batch).items():
                parts[name].append(np.ravel(values).astype(float))
        return {name: np.concatenate(v) if v else np.zeros(0) for name, v in parts.items()}

    def latency_ms(self, image: np.ndarray, runs: int = 30, warmup: int = 3,
                   max_seconds: float = 20.0) -> tuple[float, int]:
        """``(median milliseconds, runs)`` for one ``(1, size, size, 3)`` uint8 image."""
        return median_latency(lambda: self._run(image), runs, warmup, max_seconds)


def median_latency(call, runs: int = 30, warmup: int = 3, max_seconds: float = 20.0):
    """Median wall time of ``call()`` in ms over up to ``runs`` calls (fewer when they take
    longer than ``max_seconds`` together, at least 3), after ``warmup`` calls."""
    for _ in range(warmup):
        call()
    times, started = [], time.perf_counter()
    while len(times) < max(1, runs):
        t0 = time.perf_counter()
        call()
        times.append((time.perf_counter() - t0) * 1000.0)
        if len(times) >= 3 and time.perf_counter() - started > max_seconds:
            break
    return float(statistics.median(times)), len(times)


class SavedModelExport(ExportedModel):
    kind = "savedmodel"

    def __init__(self, artifact: str, sidecar: str):
        super().__init__(artifact, sidecar)
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(artifact)
        if "serving_default" not in self._loaded.signatures:
            raise UsmtlError(f"{artifact}: no serving_default signature. "
                             f"Received: {list(self._loaded.signatures)}")
        self._signature = self._loaded.signatures["serving_default"]

    def _run(self, images):
        out = self._signature(image=self._tf.constant(images, self._tf.uint8))
        return {name: out[name].numpy() for name in self.tasks}


class TFLiteExport(ExportedModel):
    kind = "tflite"

    def __init__(self, artifact: str, sidecar: str, threads: int | None = None):
        super().__init__(artifact, sidecar)
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise UsmtlError("Running .tflite models needs LiteRT: pip install 'usmtl[export]' "
                             "(ai-edge-litert). Received: ImportError") from None
        self.threads = threads or os.cpu_count() or 1
        self._interpreter = Interpreter(model_path=artifact, num_threads=self.threads)
        self._runner = self._interpreter.get_signature_runner("serving_default")
        detail = self._runner.get_input_details()["image"]
        self._shape = tuple(int(v) for v in detail["shape"])
        self._dtype = detail["dtype"]
        self._quant = detail.get("quantization", (0.0, 0))

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
            out = self._runner(image=self._feed(chunk))
            for name in self.tasks:
                parts[name].append(np.ravel(out[name])[:n])
        return {name: np.concatenate(v) for name, v in parts.items()}


def open_export(path: str, threads: int | None = None) -> ExportedModel | None:
    """The export at ``path`` (see :func:`usmtl.export.artifacts.find_export`), or None when
    ``path`` is not an exported model."""
    found = find_export(path)
    if found is None:
        return None
    kind, artifact, sidecar = found
    if kind == "savedmodel":
        return SavedModelExport(artifact, sidecar)
    return TFLiteExport(artifact, sidecar, threads)
