"""How far predicted probabilities can be taken at face value: Brier score, expected
calibration error, calibration intercept and slope, reliability diagrams.

Discrimination (AUC) says whether malignant masses score above benign ones; calibration says
whether "0.3" means about 30% of such masses are malignant, which is what a clinician reads.
The intercept and slope follow Van Calster et al., "Calibration: the Achilles heel of
predictive analytics", BMC Medicine 17:230, 2019, and Steyerberg, Clinical Prediction Models,
2nd ed., 2019, chapter 15: perfect calibration is intercept 0 and slope 1; a slope below 1
means the scores are too extreme (overfitting), an intercept above 0 that risks are
underestimated on average.

Labels are floats, 1, 0 or NaN (unknown: outside the task's cohort); rows with an unknown
label or score are dropped everywhere. Confidence intervals resample PATIENTS
(:func:`usmtl.evaluation.stats.patient_bootstrap_ci`). This module measures calibration only;
recalibrating a model is :mod:`usmtl.evaluation.recalibrate`'s job.

Example:
    >>> from usmtl.evaluation.calibration import brier_score, calibration_intercept_slope
    >>> round(brier_score([1, 0, 1, 0], [0.8, 0.3, 0.6, 0.1]), 4)
    0.075
    >>> a, b = calibration_intercept_slope([1, 0, 1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6, 0.7, 0.3])
    >>> round(a, 3), round(b, 3)
    (-0.087, 1.617)
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError
from usmtl.evaluation.figures import save_figure

#: Scores are clipped to [EPS, 1 - EPS] before the logit: a sigmoid saturated in float32
#: gives exactly 0 or 1, whose logit is infinite and would break the regression.
EPS = 1e-6

#: The calibration measures of :func:`calibration_metrics`, in report order.
CALIBRATION_METRICS = ("brier", "ece", "intercept", "slope")


def _known(y, p) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores of the rows where both are known, checked to be 0/1 and in [0, 1]."""
    y = np.asarray(y, dtype=float).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise UsmtlError(f"Labels and scores differ in length. Received: {len(y)} and {len(p)}")
    keep = ~np.isnan(y) & ~np.isnan(p)
    y, p = y[keep], p[keep]
    bad_y = y[(y != 0) & (y != 1)]
    if len(bad_y):
        raise UsmtlError(f"Labels must be 0, 1 or NaN (unknown). Received: {bad_y[:5].tolist()}")
    bad_p = p[(p < 0) | (p > 1)]
    if len(bad_p):
        raise UsmtlError(f"Scores must be probabilities in [0, 1]. Received: {bad_p[:5].tolist()}")
    return y, p


def logit(p) -> np.ndarray:
    """``log(p / (1 - p))``, ``p`` clipped to ``[EPS, 1 - EPS]`` (0 and 1 have no finite logit)."""
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def brier_score(y, p) -> float:
    """Mean squared difference between score and outcome (Brier, Monthly Weather Review
    1950); 0 is perfect, 0.25 is a constant 0.5. NaN without known labels.

    Args:
        y: labels 0/1, NaN for unknown (dropped).
        p: predicted probabilities.

    Returns:
        The Brier score over the known rows.

    Raises:
        UsmtlError: different lengths, a label not 0/1/NaN, or a score outside [0, 1].

    Example:
        >>> round(brier_score([1, 0, float("nan")], [0.9, 0.2, 0.5]), 4)
        0.025
    """
    y, p = _known(y, p)
    if len(y) == 0:
        return math.nan
    return float(np.mean((p - y) ** 2))


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each score on [0, 1], as ``np.histogram`` assigns them: bins are
    [a, b) except the last, [a, 1]."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.clip(np.searchsorted(edges, p, side="right") - 1, 0, n_bins - 1)


def _check_bins(n_bins) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise UsmtlError(f"n_bins must be a positive integer. Received: {n_bins!r}")
    return int(n_bins)


def reliability_curve(y, p, n_bins: int = 10) -> pd.DataFrame:
    """The points of a reliability diagram: equal-width score bins on [0, 1].

    Args:
        y: labels 0/1, NaN for unknown (dropped).
        p: predicted probabilities.
        n_bins: number of equal-width bins.

    Returns:
        One row per bin, empty bins included: ``bin_low``, ``bin_high``, ``mean_score`` (mean
        predicted probability in the bin), ``observed`` (share of positives), ``count``
        (images); the two means are NaN in an empty bin.

    Raises:
        UsmtlError: bad labels or scores (see :func:`brier_score`), or ``n_bins`` < 1.

    Example:
        >>> curve = reliability_curve([0, 0, 1, 1], [0.1, 0.15, 0.8, 0.6], n_bins=2)
        >>> curve[["mean_score", "observed", "count"]].values.tolist()
        [[0.125, 0.0, 2.0], [0.7, 1.0, 2.0]]
    """
    n_bins = _check_bins(n_bins)
    y, p = _known(y, p)
    index = _bin_index(p, n_bins)
    count = np.bincount(index, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.bincount(index, weights=p, minlength=n_bins) / count
        observed = np.bincount(index, weights=y, minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame({"bin_low": edges[:-1], "bin_high": edges[1:], "mean_score": mean_score,
                         "observed": observed, "count": count.astype(int)})


def expected_calibration_error(y, p, n_bins: int = 10) -> float:
    """ECE: the mean over equal-width score bins of |mean score - observed rate|, each bin
    weighted by its share of the images (Naeini et al., AAAI 2015). NaN without known labels.

    ECE depends on the binning and is biased upwards in small samples (an empty-ish bin is
    noisy); report it beside the intercept and slope, not instead of them.

    Args:
        y: labels 0/1, NaN for unknown (dropped).
        p: predicted probabilities.
        n_bins: number of equal-width bins on [0, 1] (``np.histogram``'s edges).

    Returns:
        The ECE, between 0 and 1.

    Raises:
        UsmtlError: bad labels or scores, or ``n_bins`` < 1.

    Example:
        >>> round(expected_calibration_error([0, 0, 1, 1], [0.1, 0.15, 0.8, 0.6], n_bins=2), 4)
        0.2125
    """
    n_bins = _check_bins(n_bins)
    y, p = _known(y, p)
    if len(y) == 0:
        return math.nan
    index = _bin_index(p, n_bins)
    # the sum of (p - y) per bin is count * (mean score - observed rate)
    gap = np.bincount(index, weights=p - y, minlength=n_bins)
    return float(np.abs(gap).sum() / len(y))


def logistic_fit(y: np.ndarray, lp: np.ndarray, slope: bool, max_iter: int = 100,
                 tol: float = 1e-10) -> tuple[float, float]:
    """Maximum likelihood ``(a, b)`` by Newton-Raphson of logit P(y=1) = a + lp (``slope``
    False: b stays 1, lp an offset) or of logit P(y=1) = a + b * lp (``slope`` True), halving
    a step that lowers the likelihood. (NaN, NaN) when it does not converge (separation: the
    estimate runs off to infinity). Written out for one or two parameters: the bootstrap calls
    it thousands of times; :mod:`usmtl.evaluation.recalibrate` fits Platt scaling with it."""
    from scipy.special import expit

    beta = np.array([0.0, 1.0])  # perfect calibration: usually a few steps from the answer

    def loglik(b):
        eta = b[0] + b[1] * lp
        return float(np.dot(y, eta) - np.logaddexp(0.0, eta).sum()), eta

    current, eta = loglik(beta)
    for _ in range(max_iter):
        mu = expit(eta)  # no overflow warning where eta is far from 0
        w = mu * (1.0 - mu)
        r = y - mu
        if slope:
            s0, s1, s2 = w.sum(), np.dot(w, lp), np.dot(w, lp * lp)
            g0, g1 = r.sum(), np.dot(r, lp)
            det = s0 * s2 - s1 * s1
            if not det > 0:
                return math.nan, math.nan
            step = np.array([(s2 * g0 - s1 * g1) / det, (s0 * g1 - s1 * g0) / det])
        else:
            s0 = w.sum()
            if not s0 > 0:
                return math.nan, math.nan
            step = np.array([r.sum() / s0, 0.0])
        if not np.all(np.isfinite(step)):
            return math.nan, math.nan
        for _ in range(30):
            candidate, candidate_eta = loglik(beta + step)
            if candidate >= current - 1e-12 * (1.0 + abs(current)):
                break
            step = step / 2
        beta = beta + step
        current, eta = candidate, candidate_eta
        if np.max(np.abs(step)) < tol * (1.0 + np.max(np.abs(beta))):
            # separated data creep towards infinity in ever smaller steps: refuse large values
            if np.max(np.abs(beta)) < 1e3:
                return float(beta[0]), float(beta[1])
            return math.nan, math.nan
    return math.nan, math.nan


def _intercept_of(y: np.ndarray, p: np.ndarray) -> float:
    if len(y) == 0 or y.min() == y.max():
        return math.nan
    return logistic_fit(y, logit(p), slope=False)[0]


def _slope_of(y: np.ndarray, p: np.ndarray) -> float:
    if len(y) == 0 or y.min() == y.max():
        return math.nan
    lp = logit(p)
    if np.ptp(lp) == 0:
        return math.nan
    return logistic_fit(y, lp, slope=True)[1]


def calibration_intercept_slope(y, p) -> tuple[float, float]:
    """Calibration intercept and slope (Van Calster et al., BMC Medicine 2019; Steyerberg,
    Clinical Prediction Models, 2019, chapter 15).

    - slope ``b``: the coefficient of logit(p) in the logistic regression
      ``logit P(y=1) = a + b * logit(p)``. 1 is ideal; below 1 the scores are too extreme.
    - intercept ``a``: calibration-in-the-large, the intercept of ``logit P(y=1) = a +
      logit(p)`` with logit(p) as an OFFSET (slope fixed at 1). 0 is ideal; above 0 the
      model underestimates the risk on average.

    Fitted by Newton-Raphson in NumPy. Scores are clipped to [1e-6, 1 - 1e-6] first
    (:data:`EPS`): a score of exactly 0 or 1 has an infinite logit.

    Args:
        y: labels 0/1, NaN for unknown (dropped).
        p: predicted probabilities.

    Returns:
        ``(intercept, slope)``; NaN where the fit does not exist: one class only (both), or
        logit(p) separating the classes perfectly or constant (the slope).

    Raises:
        UsmtlError: bad labels or scores.

    Example:
        >>> a, b = calibration_intercept_slope([1, 0, 1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6, 0.7, 0.3])
        >>> round(a, 3), round(b, 3)
        (-0.087, 1.617)
    """
    y, p = _known(y, p)
    return _intercept_of(y, p), _slope_of(y, p)


def calibration_metrics(y, p, patient_ids, n_boot: int = 1000, seed: int = 0,
                        n_bins: int = 10, level: float = 0.95) -> dict:
    """Brier score, ECE, calibration intercept and slope, each with a percentile bootstrap CI
    that resamples PATIENTS (:func:`usmtl.evaluation.stats.patient_bootstrap_ci`; the same
    resamples for every measure).

    Args:
        y: labels 0/1, NaN for unknown (dropped).
        p: predicted probabilities.
        patient_ids: each row's patient (None: each image its own patient).
        n_boot: bootstrap resamples (0: no CIs).
        seed: the bootstrap's seed.
        n_bins: bins of the ECE.
        level: coverage of the CIs.

    Returns:
        ``{"brier"|"ece"|"intercept"|"slope": {"value", "ci_low", "ci_high"}}``; a CI is NaN
        when fewer than half the resamples define the measure (e.g. one class drawn).

    Raises:
        UsmtlError: bad labels or scores.

    Example:
        >>> m = calibration_metrics([1, 0, 1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6, 0.7, 0.3],
        ...                         [1, 1, 2, 2, 3, 3], n_boot=50)
        >>> sorted(m), round(m["brier"]["value"], 3)
        (['brier', 'ece', 'intercept', 'slope'], 0.158)
    """
    from usmtl.evaluation import stats

    _known(y, p)  # refuse bad input before any resampling
    # the resamples hold known, checked rows: skip the checks in the inner loop
    functions = {"brier": lambda a, b: float(np.mean((b - a) ** 2)),
                 "ece": lambda a, b: expected_calibration_error(a, b, n_bins),
                 "intercept": _intercept_of, "slope": _slope_of}
    intercept, slope = calibration_intercept_slope(y, p)
    values = {"brier": brier_score(y, p), "ece": expected_calibration_error(y, p, n_bins),
              "intercept": intercept, "slope": slope}
    result = {}
    for name in CALIBRATION_METRICS:
        low = high = math.nan
        if n_boot > 0 and not math.isnan(values[name]):
            low, high = stats.patient_bootstrap_ci(y, p, patient_ids, functions[name], n_boot,
                                                   seed, level)
        result[name] = {"value": float(values[name]), "ci_low": low, "ci_high": high}
    return result


def _labelled_tasks(frame: pd.DataFrame, tasks=None) -> list[str]:
    """Tasks of a prediction frame with a label column and both classes known."""
    from usmtl.evaluation.predictions import prediction_tasks

    out = []
    for task in tasks if tasks is not None else prediction_tasks(frame):
        if f"y_{task}" not in frame or f"p_{task}" not in frame:
            continue
        y = frame[f"y_{task}"].to_numpy(float)
        if len(np.unique(y[~np.isnan(y)])) == 2:
            out.append(task)
    return out


def plot_reliability(frame: pd.DataFrame, out_dir: str, n_bins: int = 10,
                     tasks=None) -> list[str]:
    """A reliability diagram per task, ``reliability_<task>.png``: observed rate against mean
    score per bin with the diagonal of perfect calibration, and below it (sharing the score
    axis) a histogram of the scores by class, which shows where the points come from.

    Args:
        frame: a prediction frame (``p_<task>``, ``y_<task>``).
        out_dir: folder of the PNGs (it must exist).
        n_bins: equal-width bins.
        tasks: the tasks to draw (default: every task with labels of both classes).

    Returns:
        The paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from usmtl.tasks import display_name

    paths = []
    for task in _labelled_tasks(frame, tasks):
        y, p = _known(frame[f"y_{task}"], frame[f"p_{task}"])
        curve = reliability_curve(y, p, n_bins)
        fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(4.5, 5.5),
                                          gridspec_kw={"height_ratios": [3, 1]})
        top.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
        filled = curve[curve["count"] > 0]
        top.plot(filled["mean_score"], filled["observed"], "o-", label=task)
        top.set(ylabel="observed rate", xlim=(0, 1), ylim=(-0.02, 1.02),
                title=f"Reliability: {display_name(task, frame.attrs.get('display_names'))} "
                      f"(n = {len(y)})")
        top.legend(loc="upper left", fontsize=8)
        edges = np.linspace(0, 1, n_bins + 1)
        bottom.hist([p[y == 0], p[y == 1]], bins=edges, stacked=True,
                    label=["negative", "positive"], color=["tab:blue", "tab:red"])
        bottom.set(xlabel="predicted probability", ylabel="images")
        bottom.legend(fontsize=7)
        paths.append(save_figure(fig, os.path.join(out_dir, f"reliability_{task}.png")))
    return paths
