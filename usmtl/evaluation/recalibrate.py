"""Recalibration, the command (``usmtl calibrate``): fit a map of every labelled head's
probabilities on the validation split of a run, store it as the run's ``calibration.json``,
and show Brier, ECE, calibration intercept and slope before and after. The maps themselves
(Platt, temperature), and their application wherever a run's scores are read, are
:mod:`usmtl.evaluation.calibration_maps`.

Example:
    >>> from usmtl.evaluation.recalibrate import calibrate_run, format_figures
    >>> print(format_figures(calibrate_run("runs/quickstart")))  # doctest: +SKIP
"""

from __future__ import annotations

import os

import pandas as pd

from usmtl.errors import UsmtlError
# describe is re-exported: the CLI reads it here.
from usmtl.evaluation.calibration_maps import describe, fit_calibration  # noqa: F401


def _calibration_figures(frame: pd.DataFrame, task: str, column: str) -> dict:
    from usmtl.evaluation.calibration import calibration_metrics

    figures = calibration_metrics(frame[f"y_{task}"].to_numpy(float),
                                  frame[column].to_numpy(float),
                                  frame["patient_id"].astype(str).to_numpy(), n_boot=0)
    return {name: value["value"] for name, value in figures.items()}


def calibrate_run(run_dir: str, method: str = "platt", remove: bool = False) -> dict:
    """``usmtl calibrate``: fit a recalibration of every labelled head on the run's
    validation split and store it as the run's ``calibration.json``; from then on
    ``predict``, ``evaluate``, ``validate`` and ``export`` apply (or carry) it.

    Args:
        run_dir: a finished run directory.
        method: ``platt`` or ``temperature``.
        remove: delete the run's calibration instead (scores are raw again).

    Returns:
        ``{"calibration": the stored dict (None when removed), "skipped": {task: why},
        "figures": {split: {task: {"before": {...}, "after": {...}}}}}`` with Brier, ECE,
        calibration intercept and slope before and after on val (in-sample: the fit's own
        data) and test.

    Raises:
        UsmtlError: not a run directory; no head could be fitted (each reason named).

    Example:
        >>> from usmtl.evaluation.recalibrate import calibrate_run
        >>> result = calibrate_run("runs/quickstart", "platt")  # doctest: +SKIP
        >>> result["figures"]["test"]["malignancy"]["after"]["slope"]  # doctest: +SKIP
        0.97
    """
    from usmtl.evaluation.run_scores import run_predictions
    from usmtl.run import Run

    run = Run.open(run_dir)
    with run.lock():
        if remove:
            if os.path.isfile(run.calibration_path):
                os.remove(run.calibration_path)
            return {"calibration": None, "skipped": {}, "figures": {}}
        val = run_predictions(run_dir, None, "val", calibrated=False)
        calibration, skipped = fit_calibration(val, method)
        fitted = calibration["tasks"]
        if not fitted:
            raise UsmtlError(f"{run_dir}: no head could be recalibrated on its validation split: "
                             + "; ".join(f"{t}: {why}" for t, why in skipped.items()))
        run.write_json(os.path.basename(run.calibration_path), calibration)
    figures = {}
    for split in ("val", "test"):
        frame = run_predictions(run_dir, None, split)
        figures[split] = {task: {"before": _calibration_figures(frame, task, f"raw_{task}"),
                                 "after": _calibration_figures(frame, task, f"p_{task}")}
                          for task in fitted if frame[f"y_{task}"].notna().any()}
    return {"calibration": calibration, "skipped": skipped, "figures": figures}


def format_figures(result: dict) -> str:
    """The before/after table of :func:`calibrate_run`, as Markdown."""
    lines = ["| split | task | Brier | ECE | intercept | slope |", "|---|---|---|---|---|---|"]
    for split, tasks in result["figures"].items():
        for task, both in tasks.items():
            cells = [f"{both['before'][k]:.3f} -> {both['after'][k]:.3f}"
                     for k in ("brier", "ece", "intercept", "slope")]
            lines.append(f"| {split} | {task} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
