"""The maps of recalibration (``usmtl calibrate``, :mod:`usmtl.evaluation.recalibrate`): a
head's probabilities to calibrated ones, fitted on the validation split of its run and
applied wherever the run's scores are read.

Two maps, both monotone (AUC and every ranking are unchanged; thresholds move):

- ``platt``: ``sigmoid(a * logit(p) + b)``, logistic recalibration (Platt 1999, fitted by
  maximum likelihood on the logit of the head's score, as in Steyerberg's "Clinical
  Prediction Models", ch. 15). Corrects both the slope and the intercept.
- ``temperature``: ``sigmoid(logit(p) / T)`` (Guo et al., ICML 2017): one parameter,
  corrects over- and under-confidence only.

A calibration is a JSON-able dict, stored as the run's ``calibration.json``::

    {"method": "platt", "fitted_on": "val", "tasks": {"malignancy": {"a": .., "b": .., "n": ..,
     "positives": ..}}}

Prediction caches (``val_predictions.csv``, ``<split>_predictions.csv``) always hold the raw
scores; :func:`apply_calibration` is applied when they are read, so thresholds chosen on
validation and the scores they are applied to always agree.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(0.01, 0.99, 2000)
    >>> y = (rng.uniform(size=2000) < 1 / (1 + np.exp(-0.5 * np.log(p / (1 - p))))).astype(float)
    >>> params = fit_task(y, p, "platt")
    >>> round(params["a"], 1)  # the scores were over-confident: slope about 0.5
    0.5
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError
from usmtl.evaluation.calibration import logistic_fit, logit


METHODS = ("platt", "temperature")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    from scipy.special import expit

    return expit(x)  # no overflow warning for large |x|


def _fit_temperature(y: np.ndarray, z: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    def nll(log_t):
        q = np.clip(_sigmoid(z / math.exp(log_t)), 1e-12, 1 - 1e-12)
        return -np.mean(y * np.log(q) + (1 - y) * np.log1p(-q))

    return float(math.exp(minimize_scalar(nll, bounds=(-5, 5), method="bounded").x))


def fit_task(y, p, method: str = "platt") -> dict:
    """Fit one head's recalibration on its known labels.

    Args:
        y: labels (NaN = unknown, dropped).
        p: the head's probabilities.
        method: ``platt`` or ``temperature``.

    Returns:
        ``{"a", "b"}`` (platt) or ``{"temperature"}``, with ``n`` and ``positives``.

    Raises:
        UsmtlError: an unknown method; fewer than 2 labels of each class; a Platt slope
            <= 0 (the scores do not rank the labels; the map would invert them).
    """
    if method not in METHODS:
        raise UsmtlError(f"method must be one of {list(METHODS)}. Received: {method!r}")
    y, p = np.asarray(y, float), np.asarray(p, float)
    known = ~np.isnan(y) & ~np.isnan(p)
    y, z = y[known], logit(p[known])
    positives = int(y.sum())
    if positives < 2 or len(y) - positives < 2:
        raise UsmtlError(f"Recalibration needs at least 2 labelled positives and 2 negatives. "
                         f"Received: {len(y)} labels, {positives} positive")
    counts = {"n": int(len(y)), "positives": positives}
    if method == "platt":
        b, a = logistic_fit(y, z, slope=True)
        if math.isnan(a):
            raise UsmtlError(f"The logistic recalibration did not converge (the scores separate "
                             f"the labels perfectly?). Received: {len(y)} labels, {positives} "
                             f"positive")
        if a <= 0:
            # a head that does not rank on validation: a negative slope would invert it
            raise UsmtlError(f"The fitted Platt slope is {a:.3f} <= 0: the scores do not rank "
                             f"the labels on this data, and recalibrating would invert them. "
                             f"Received: {len(y)} labels, {positives} positive")
        return {"a": a, "b": b, **counts}
    return {"temperature": _fit_temperature(y, z), **counts}


def apply_task(params: dict, p) -> np.ndarray:
    """Calibrated probabilities of one head (NaN stays NaN)."""
    z = logit(p)
    if "temperature" in params:
        return _sigmoid(z / params["temperature"])
    return _sigmoid(params["a"] * z + params["b"])


def fit_calibration(frame: pd.DataFrame, method: str = "platt", tasks=None,
                    fitted_on: str = "val") -> tuple[dict, dict]:
    """A calibration of every task (or ``tasks``) of a prediction frame with labels.

    Returns:
        ``(calibration, skipped)``: the calibration dict of the module docstring, with the
        tasks that could be fitted, and ``{task: why}`` for those that could not (too few
        labels, a slope <= 0, no ``p_``/``y_`` columns).

    Raises:
        UsmtlError: an unknown method.
    """
    from usmtl.evaluation.predictions import prediction_tasks

    if method not in METHODS:
        raise UsmtlError(f"method must be one of {list(METHODS)}. Received: {method!r}")
    fitted, skipped = {}, {}
    for task in (list(tasks) if tasks else prediction_tasks(frame)):
        if f"p_{task}" not in frame or f"y_{task}" not in frame:
            skipped[task] = (f"no p_{task}/y_{task} columns in the {fitted_on} predictions. "
                             f"Received columns: {list(frame.columns)}")
            continue
        try:
            fitted[task] = fit_task(frame[f"y_{task}"], frame[f"p_{task}"], method)
        except UsmtlError as exc:
            skipped[task] = f"on the {fitted_on} split: {exc}"
    return {"method": method, "fitted_on": fitted_on, "tasks": fitted}, skipped


def apply_calibration(frame: pd.DataFrame, calibration: dict | None, edges=(),
                      threshold: float = 0.5) -> pd.DataFrame:
    """A copy of a prediction frame with ``p_<task>`` calibrated and the raw score kept as
    ``raw_<task>``; the frame itself when ``calibration`` is None or already applied. The
    hierarchy-violation columns are recomputed over ``edges`` on the calibrated scores, or
    on both raw scores for an edge whose child or parent was not recalibrated."""
    if not calibration or any(c.startswith("raw_") for c in frame.columns):
        return frame
    from usmtl.evaluation.predictions import prediction_tasks, violations

    out = frame.copy()
    for task, params in calibration["tasks"].items():
        if f"p_{task}" in out:
            raw = out[f"p_{task}"].to_numpy(float)
            out.insert(out.columns.get_loc(f"p_{task}") + 1, f"raw_{task}", raw)
            out[f"p_{task}"] = apply_task(params, raw)
    if edges and "hierarchy_violation" in out:
        from usmtl.evaluation.scope import one_scale_frame

        tasks = set(prediction_tasks(out))
        flags, which, excess = np.zeros(len(out), bool), [[] for _ in range(len(out))], np.nan
        for parent, child in edges:
            if parent not in tasks or child not in tasks:
                continue
            # Where only one of the two is recalibrated, both raw scores (one scale).
            pair = one_scale_frame(out, parent, child)
            f, w, e = violations({t: pair[f"p_{t}"].to_numpy() for t in (parent, child)},
                                 [(parent, child)], threshold)
            flags |= f
            excess = np.fmax(excess, e)
            for i in np.flatnonzero(f):
                which[i].append(w[i])
        out["hierarchy_violation"], out["violated_edges"] = flags.astype(int), [";".join(v) for v in which]
        out["hierarchy_excess"] = excess
    return out


def describe(calibration: dict | None) -> str:
    """One line for outputs: what was applied."""
    if not calibration:
        return "uncalibrated (no calibration.json)"
    tasks = ", ".join(calibration["tasks"])
    return (f"calibrated ({calibration['method']}, fitted on the {calibration['fitted_on']} "
            f"split; {tasks})")
