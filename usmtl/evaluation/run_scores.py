"""A run's prediction frames as evaluation reads them: cached per split in the run directory,
predicted again when the cache is stale, recalibrated when the run has a calibration; and
the manifest rows they were predicted from, in the same order.

Example:
    >>> from usmtl.evaluation.run_scores import run_predictions
    >>> frame = run_predictions("runs/quickstart", split="val")  # doctest: +SKIP
    >>> frame.columns[:4].tolist()  # doctest: +SKIP
    ['image', 'patient_id', 'split', 'p_malignancy']
"""

from __future__ import annotations

import os
import sys

import pandas as pd

from usmtl.evaluation.predictions import read_predictions
from usmtl.evaluation.scope import require_model


def run_predictions(run_dir: str, manifest: str | None = None, split: str = "test",
                    calibrated: bool = True, tta: str = "none") -> pd.DataFrame:
    """Predictions of a run on one split of its manifest (cached as ``<split>_predictions.csv``,
    with test-time augmentation ``<split>-tta-<tta>_predictions.csv``, when the run's own
    manifest is used; redone when :meth:`usmtl.run.Run.stale_predictions` says), with the
    run's recalibration applied when it has one (``usmtl calibrate``; the cache holds the raw
    scores)."""
    from usmtl.evaluation.calibration_maps import apply_calibration
    from usmtl.run import Run, write_csv_atomic
    from usmtl.tasks import TaskGraph

    run = Run.open(run_dir)
    run_manifest = run.manifest_path
    own = manifest is None or os.path.abspath(manifest) == run_manifest
    key = split if tta == "none" else f"{split}-tta-{tta}"  # the cache's name
    cache = run.predictions_path(key)
    stale = run.stale_predictions(key) if own else None
    if own and stale is None:
        frame = read_predictions(cache)
    else:
        from usmtl.predict import predict

        if own and os.path.isfile(cache):
            require_model(run, cache, stale)
            print(f"Note: predicting the {split} split again: {stale}", file=sys.stderr)
        frame = predict(run_dir, manifest or run_manifest, split=split, calibrated=False, tta=tta)
        if own:
            write_csv_atomic(cache, frame)
            run.write_predictions_stamp(key)
    edges = TaskGraph.from_config(run.config().tasks).edges
    return apply_calibration(frame, run.calibration() if calibrated else None, edges)


def run_manifest_rows(run_dir: str, manifest: str | None = None,
                      split: str = "test") -> pd.DataFrame:
    """The manifest rows (as text) of a run's ``split``, in the order its predictions list
    them (:func:`usmtl.predict.predict` selects them with
    :func:`usmtl.data.splits.select_split_rows`)."""
    from usmtl.data.manifest import read_manifest
    from usmtl.data.splits import select_split_rows
    from usmtl.run import Run

    run = Run.open(run_dir)
    path = manifest or run.manifest_path
    rows, _ = select_split_rows(read_manifest(path), run.split_path, split, path, run_dir)
    return rows.frame
