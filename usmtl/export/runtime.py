"""Running models: what every format's loader returns (:class:`Runtime`), and the
exports' common part (:class:`ExportedModel`: the side files).

Every runtime takes uint8 RoI crops and returns ``{task: probabilities}`` in the model's task
order, which is what :mod:`usmtl.predict`, the parity report and ``usmtl bench predict`` need.
The runtimes themselves live with their formats (:mod:`usmtl.formats`): a SavedModel through its
``serving_default`` signature, a ``.tflite`` file through LiteRT, a Keras model.

Example:
    >>> from usmtl.formats import open_model
    >>> model = open_model("exports/quickstart/1").model  # doctest: +SKIP
    >>> model.predict(crops)["malignancy"].shape  # doctest: +SKIP
    (10,)
"""

from __future__ import annotations

import os
import statistics
import time

import numpy as np

from usmtl.errors import UsmtlError
from usmtl.export.artifacts import CONFIG_FILE, EXPORT_FILE, read_metadata


class Runtime:
    """A loaded model of any format. Subclasses implement :meth:`_run` (one batch of uint8
    crops to ``{task: values}``) and set ``kind`` (the format's name), ``artifact``,
    ``tasks`` and ``image_size`` (None when the model takes any size and nothing says which)."""

    kind = ""
    artifact = ""
    tasks: list = []
    image_size: int | None = None
    runtime_label = ""  # how it runs, for the parity report's latency line

    def _run(self, images: np.ndarray) -> dict:
        raise NotImplementedError

    def run(self, images: np.ndarray) -> dict:
        """One batch as the model takes it (its fixed batch, where it has one), as is."""
        return self._run(images)

    def batch_limit(self) -> int | None:
        """The fixed batch the model takes, None for any."""
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
                parts.setdefault(name, []).append(np.ravel(values).astype(float))
        return {name: np.concatenate(v) if v else np.zeros(0) for name, v in parts.items()}

    def predict_files(self, paths, boxes, data, batch_size: int = 32) -> dict:
        """``{task: probabilities}`` for image files and their boxes, cropped as ``data``
        (a :class:`usmtl.config.DataConfig`) says."""
        from usmtl.data.crops import Crops

        return self.predict_crops(Crops.from_files(paths, boxes, data), batch_size)

    def predict_crops(self, crops, batch_size: int = 32) -> dict:
        """``{task: probabilities}`` for a :class:`usmtl.data.crops.Crops` (image files or
        a packed crop file), read a batch at a time."""
        return self.predict(crops.batches(batch_size))

    def latency_ms(self, image: np.ndarray, runs: int = 30, warmup: int = 3,
                   max_seconds: float = 20.0) -> tuple[float, int]:
        """``(median milliseconds, runs)`` for one ``(1, size, size, 3)`` uint8 image."""
        return median_latency(lambda: self._run(image), runs, warmup, max_seconds)


class ExportedModel(Runtime):
    """An export and its description (``meta``: ``usmtl_export.json``; ``cfg``: the run's
    config). ``sidecar`` None, or a folder without ``usmtl_export.json``: a model without
    usmtl's side files (``meta`` empty, ``cfg`` None; the subclass takes the task names and
    the size from the model itself)."""

    def __init__(self, artifact: str, sidecar: str | None = None):
        from usmtl.config import load_config

        self.artifact = artifact
        self.sidecar = sidecar
        self.meta, self.cfg, self.tasks, self.edges = {}, None, [], []
        if sidecar is None or not os.path.isfile(os.path.join(sidecar, EXPORT_FILE)):
            return
        self.meta = read_metadata(sidecar)
        config = os.path.join(sidecar, CONFIG_FILE)
        if not os.path.isfile(config):
            raise UsmtlError(f"{config} is missing: it holds the RoI settings the model was "
                             f"trained with. Received: {artifact}")
        self.cfg = load_config(config)
        self.tasks = list(self.meta["tasks"])
        self.edges = [tuple(edge) for edge in self.meta["edges"]]
        self.image_size = int(self.meta["input"]["image_size"])


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


def __getattr__(name):
    """Runtimes moved to their format modules (``SavedModelExport``, ``TFLiteExport``...)
    are still found here."""
    import sys

    from usmtl.formats import registered

    for fmt in registered():
        value = getattr(sys.modules[type(fmt).__module__], name, None)
        if isinstance(value, type) and issubclass(value, Runtime):
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_export(path: str, threads: int | None = None) -> ExportedModel | None:
    """The export at ``path`` opened through :func:`usmtl.formats.open_model`, or None when
    ``path`` is no export (nothing, or a Keras model)."""
    from usmtl.formats import open_model, recognise

    found = recognise(path)
    if found is None or found.format.keras:
        return None
    return open_model(path, threads=threads).model
