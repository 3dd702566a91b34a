"""The Python API: ``usmtl.load(path)`` and what it returns, in the Keras and scikit-learn
manner.

:func:`load` opens any model usmtl reads (a run directory, a ``.keras`` file, a SavedModel
export or a ``.tflite`` file) through the one door, :func:`usmtl.formats.open_model`, and
registers usmtl's custom Keras layers (``import usmtl.model``) when it loads a Keras model.
Nothing heavy is imported until a prediction or ``.model`` asks for it.

Example:
    >>> import usmtl
    >>> predictor = usmtl.load("runs/quickstart")  # doctest: +SKIP
    >>> predictor.tasks  # doctest: +SKIP
    ['malignancy', 'alnm', 'aln_ge_2', 'aln_ge_3', 'aln_ge_4']
    >>> predictor.predict("demo/manifest.csv", split="test").head(2)  # doctest: +SKIP
    >>> predictor.predict(crops)["malignancy"]  # uint8 RoI crops (n, size, size, 3)  # doctest: +SKIP
    >>> predictor.model.output_names  # the keras.Model  # doctest: +SKIP
    ['malignancy', 'alnm', 'aln_ge_2', 'aln_ge_3', 'aln_ge_4']
"""

from __future__ import annotations

import os

import numpy as np

from usmtl.errors import UsmtlError


class Predictor:
    """A loaded usmtl model (see :func:`load`).

    Attributes:
        path: the path it was opened from.
        cfg: the run's :class:`~usmtl.config.ExperimentConfig` (tasks, RoI settings).
        tasks: the task names, the keys of every prediction.
        image_size: the side of the square RoI crops the model takes.
        run_dir: the run it comes from, when known.
    """

    def __init__(self, opened, calibrated: bool = True):
        self._opened = opened
        self.path = opened.path
        self.cfg = opened.cfg
        self.run_dir = opened.run_dir
        self.tasks = [t.name for t in opened.cfg.tasks]
        self.image_size = opened.cfg.data.image_size
        self.calibrated = calibrated

    def __repr__(self) -> str:
        return (f"<usmtl.Predictor {self._opened.format.name} {self.path!r} tasks={self.tasks} "
                f"image_size={self.image_size}>")

    @property
    def model(self):
        """The ``keras.Model`` of a run or ``.keras`` file (its outputs are named after the
        tasks); for an export, the format's runtime (``predict(images)``). Loaded on first
        use."""
        if self._opened.format.keras:
            return self._opened.model.keras
        return self._opened.model

    @property
    def calibration(self) -> dict | None:
        """The recalibration applied to the scores (``usmtl calibrate``), None if none."""
        return self._opened.calibration if self.calibrated else None

    def predict(self, x, box: str | None = None, split: str | None = None,
                batch_size: int = 32):
        """Probabilities of every task.

        Args:
            x: uint8 (or [0, 255] float) RoI crops, an array ``(n, size, size, 3)`` or one
                crop ``(size, size, 3)``; or a path: a manifest CSV, a packed crop file
                (``usmtl pack``) or one image file with ``box``.
            box: ``"x_min,y_min,x_max,y_max"`` of the mass in a single image file.
            split: with a manifest, only the rows of this split of the model's run.
            batch_size: images per forward pass.

        Returns:
            For arrays, ``{task: (n,) float array}``; for a path, the prediction frame of
            :func:`usmtl.predict.predict` (``p_<task>``, labels where the manifest has them).
            Calibrated scores when the run has a calibration and ``calibrated`` is on.

        Raises:
            ValueError: an array that is not ``(n, size, size, 3)`` crops.
            UsmtlError: a path :func:`usmtl.predict.predict` refuses (it names why).
        """
        if isinstance(x, (str, os.PathLike)):
            from usmtl.predict import predict

            return predict(self.path, os.fspath(x), box=box, split=split,
                           batch_size=batch_size, calibrated=self.calibrated)
        images = np.asarray(x)
        if images.ndim == 3:
            images = images[None]
        size = self.image_size
        if images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(f"x must be RoI crops of shape (n, {size}, {size}, 3) or one crop "
                             f"({size}, {size}, 3) (crop and resize with usmtl.data.roi."
                             f"crop_roi, or pass a manifest path). Received: an array of shape "
                             f"{images.shape}")
        if not np.issubdtype(images.dtype, np.number):
            raise ValueError(f"x must hold numbers in [0, 255]. Received: dtype {images.dtype}")
        probs = self._opened.model.predict(images, batch_size)
        return self._calibrate({t: np.asarray(probs[t], float).ravel() for t in self.tasks})

    def _calibrate(self, probs: dict) -> dict:
        calibration = self.calibration
        if not calibration:
            return probs
        from usmtl.evaluation.calibration_maps import apply_task

        return {t: apply_task(calibration["tasks"][t], p) if t in calibration["tasks"] else p
                for t, p in probs.items()}


def load(path, calibrated: bool = True) -> Predictor:
    """Open a usmtl model for prediction: ``usmtl.load("runs/x")``.

    Args:
        path: a run directory, a ``.keras`` file, a SavedModel export folder or a ``.tflite``
            file (anything :func:`usmtl.formats.open_model` opens, with usmtl's side files).
        calibrated: apply the run's recalibration (``usmtl calibrate``) when it has one.

    Returns:
        A :class:`Predictor`; the model itself is loaded on the first prediction or
        ``.model``.

    Raises:
        UsmtlError: a path no format opens (the message lists what is accepted).
    """
    from usmtl.formats import open_model

    opened = open_model(path)
    if opened.cfg is None:
        raise UsmtlError(f"{path} has no usmtl side files (task names, RoI settings). "
                         f"Received: {path}")
    return Predictor(opened, calibrated)
