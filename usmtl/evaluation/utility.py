"""Clinical utility: decision curves and operating points.

A decision curve (Vickers & Elkin, Medical Decision Making 26:565-574, 2006) asks whether
acting on the model beats acting on everyone or no one. At a threshold probability pt (the
risk at which a clinician would biopsy, or dissect the axilla), calling positive the images
with score >= pt has

    net benefit = TP/n - FP/n * pt / (1 - pt),

true positives gained minus false positives, weighted by the harm-to-benefit odds that pt
implies. "Treat all" has prevalence - (1 - prevalence) * pt / (1 - pt); "treat none" has 0.

An operating point is a threshold chosen for a clinical rule, "sensitivity >= 0.90" (do not
miss cancers) or "specificity >= 0.95" (spare benign biopsies). It must be chosen on
validation predictions and then applied to the test set; chosen on the test set itself it is
optimistic, and the report says so. Thresholds are observed scores and an image is called
positive when its score is >= the threshold, as in
:func:`usmtl.evaluation.metrics.binary_metrics`.

Labels are floats, 1, 0 or NaN (unknown: outside the task's cohort, dropped). Confidence
intervals resample PATIENTS (:mod:`usmtl.evaluation.stats`).

Example:
    >>> from usmtl.evaluation.utility import net_benefit
    >>> net_benefit([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1], [0.5]).round(3).tolist()
    [0.0]
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError
from usmtl.evaluation.figures import save_figure

#: Default threshold probabilities of a decision curve: 0.01, 0.02, ..., 0.99.
DEFAULT_THRESHOLDS = np.round(np.arange(1, 100) / 100, 2)

#: The clinical rules of :func:`operating_points`.
RULES = ("sensitivity", "specificity")


def _known(y, p) -> tuple[np.ndarray, np.ndarray]:
    from usmtl.evaluation.calibration import _known as known

    return known(y, p)


def _thresholds(thresholds) -> np.ndarray:
    t = DEFAULT_THRESHOLDS if thresholds is None else np.asarray(thresholds, dtype=float).ravel()
    bad = t[~((t > 0) & (t < 1))]
    if len(bad):
        # pt / (1 - pt) is undefined at 1 and meaningless at 0 or outside (0, 1)
        raise UsmtlError(f"Decision thresholds must lie strictly between 0 and 1. Received: "
                         f"{bad[:5].tolist()}")
    return t


def _counts_at_or_above(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of ``values`` are >= each threshold."""
    ordered = np.sort(values)
    return len(ordered) - np.searchsorted(ordered, thresholds, side="left")


def net_benefit(y, p, thresholds) -> np.ndarray:
    """Net benefit of calling positive the images with score >= pt, for each pt:
    ``TP/n - FP/n * pt / (1 - pt)`` over the rows with a known label.

    Args:
        y: labels 0/1, NaN for unknown (dropped).
        p: predicted probabilities.
        thresholds: threshold probabilities, each strictly between 0 and 1.

    Returns:
        The net benefit at each threshold (NaN everywhere without known labels).

    Raises:
        UsmtlError: bad labels or scores, or a threshold outside (0, 1).

    Example:
        >>> net_benefit([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1], [0.2, 0.5]).round(4).tolist()
        [0.4375, 0.0]
    """
    y, p = _known(y, p)
    t = _thresholds(thresholds)
    n = len(y)
    if n == 0:
        return np.full(len(t), math.nan)
    tp = _counts_at_or_above(p[y == 1], t)
    fp = _counts_at_or_above(p[y == 0], t)
    return tp / n - fp / n * t / (1 - t)


def decision_curve(y, p, thresholds=None) -> pd.DataFrame:
    """The decision curve of a model beside the two default strategies.

    Args:
        y: labels 0/1, NaN for unknown (dropped).
        p: predicted probabilities.
        thresholds: threshold probabilities in (0, 1) (default 0.01 to 0.99 by 0.01).

    Returns:
        A frame with ``threshold``, ``model`` (:func:`net_benefit`), ``treat_all``
        (prevalence - (1 - prevalence) * pt / (1 - pt)) and ``treat_none`` (0).

    Raises:
        UsmtlError: bad labels or scores, or a threshold outside (0, 1).

    Example:
        >>> curve = decision_curve([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1], [0.2, 0.5])
        >>> curve.round(4).values.tolist()
        [[0.2, 0.4375, 0.375, 0.0], [0.5, 0.0, 0.0, 0.0]]
    """
    y, p = _known(y, p)
    t = _thresholds(thresholds)
    prevalence = float(y.mean()) if len(y) else math.nan
    return pd.DataFrame({"threshold": t, "model": net_benefit(y, p, t),
                         "treat_all": prevalence - (1 - prevalence) * t / (1 - t),
                         "treat_none": np.zeros(len(t))})


def decision_curves(frame: pd.DataFrame, thresholds=None, tasks=None) -> dict[str, pd.DataFrame]:
    """:func:`decision_curve` of each task of a prediction frame with labels of both classes
    (or of ``tasks``): ``{task: curve}``."""
    from usmtl.evaluation.calibration import _labelled_tasks

    return {task: decision_curve(frame[f"y_{task}"], frame[f"p_{task}"], thresholds)
            for task in _labelled_tasks(frame, tasks)}


def plot_decision_curves(frame: pd.DataFrame, out_dir: str, thresholds=None,
                         tasks=None) -> list[str]:
    """A decision-curve PNG per task, ``decision_curve_<task>.png``: net benefit of the
    model, treat all and treat none against the threshold probability.

    Args:
        frame: a prediction frame (``p_<task>``, ``y_<task>``).
        out_dir: folder of the PNGs (it must exist).
        thresholds: threshold probabilities (default 0.01 to 0.99).
        tasks: the tasks to draw (default: every task with labels of both classes).

    Returns:
        The paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from usmtl.tasks import display_name

    paths = []
    for task, curve in decision_curves(frame, thresholds, tasks).items():
        name = display_name(task, frame.attrs.get("display_names"))
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.plot(curve["threshold"], curve["model"], label="model")
        ax.plot(curve["threshold"], curve["treat_all"], "--", color="grey", label="treat all")
        ax.plot(curve["threshold"], curve["treat_none"], ":", color="black", label="treat none")
        # treat all plunges below zero at high thresholds: keep the useful range in view
        top = max(float(np.nanmax(curve[["model", "treat_all"]].to_numpy())), 0.0)
        ax.set(xlabel="threshold probability", ylabel="net benefit", xlim=(0, 1),
               ylim=(-0.05 - 0.05 * top, top * 1.1 + 0.01), title=f"Decision curve: {name} (n = {len(frame[f'y_{task}'].dropna())})")
        ax.legend(fontsize=8)
        paths.append(save_figure(fig, os.path.join(out_dir, f"decision_curve_{task}.png")))
    return paths


# --------------------------------------------------------------------------------------------
# Operating points
# --------------------------------------------------------------------------------------------

def _check_target(target) -> float:
    try:
        value = float(target)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 < value <= 1:
        raise UsmtlError(f"A target sensitivity or specificity lies in (0, 1]. Received: {target!r}")
    return value


def _levels(y: np.ndarray, p: np.ndarray):
    """Observed scores (ascending) and, at each as the threshold, sensitivity and
    specificity."""
    levels, inverse = np.unique(p, return_inverse=True)
    pos_at = np.bincount(inverse, weights=(y == 1).astype(float), minlength=len(levels))
    neg_at = np.bincount(inverse, weights=(y == 0).astype(float), minlength=len(levels))
    se = np.cumsum(pos_at[::-1])[::-1] / pos_at.sum()  # positives with score >= level
    sp = (np.cumsum(neg_at) - neg_at) / neg_at.sum()  # negatives with score < level
    return levels, se, sp


def _rates(y, p, target):
    """``(target, levels, sensitivity, specificity)`` of the known labels (see
    :func:`_levels`), the target checked; None with one class only."""
    target = _check_target(target)
    y, p = _known(y, p)
    if not (y == 1).any() or not (y == 0).any():
        return None
    return (target, *_levels(y, p))


def threshold_for_sensitivity(y, p, target: float) -> float:
    """The largest threshold whose sensitivity is >= ``target`` (positive: score >=
    threshold), i.e. the most specific rule that still catches that share of positives. It
    is an observed score of a positive.

    Args:
        y: labels 0/1, NaN for unknown (dropped).
        p: predicted probabilities.
        target: the sensitivity required, in (0, 1].

    Returns:
        The threshold; NaN with one class only.

    Raises:
        UsmtlError: bad labels, scores or target.

    Example:
        >>> threshold_for_sensitivity([1, 1, 1, 1, 0, 0], [0.9, 0.8, 0.6, 0.3, 0.7, 0.2], 0.75)
        0.6
    """
    found = _rates(y, p, target)
    if found is None:
        return math.nan
    target, levels, se, _ = found
    # tolerance: 0.9 * 10 positives must accept 9/10 despite rounding
    return float(levels[np.flatnonzero(se >= target - 1e-12)[-1]])


def threshold_for_specificity(y, p, target: float) -> float:
    """The smallest threshold whose specificity is >= ``target`` (negative: score <
    threshold), i.e. the most sensitive rule that still clears that share of negatives. It
    is an observed score; when none reaches the target (the highest scores are negatives and
    the target is 1) it is the number just above the highest score, calling no one positive.

    Args:
        y: labels 0/1, NaN for unknown (dropped).
        p: predicted probabilities.
        target: the specificity required, in (0, 1].

    Returns:
        The threshold; NaN with one class only.

    Raises:
        UsmtlError: bad labels, scores or target.

    Example:
        >>> threshold_for_specificity([0, 0, 0, 0, 1, 1], [0.1, 0.2, 0.4, 0.7, 0.5, 0.9], 0.75)
        0.5
    """
    found = _rates(y, p, target)
    if found is None:
        return math.nan
    target, levels, _, sp = found
    ok = np.flatnonzero(sp >= target - 1e-12)
    if len(ok) == 0:
        return float(np.nextafter(levels[-1], np.inf))
    return float(levels[ok[0]])


def _npv(y: np.ndarray, p: np.ndarray, threshold: float) -> float:
    negative = p < threshold
    called = int(negative.sum())
    return float(np.sum(negative & (y == 0)) / called) if called else math.nan


def operating_points(y, p, patient_ids, val_y=None, val_p=None, targets=(0.90, 0.95),
                     n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> list[dict]:
    """Thresholds for "sensitivity >= target" and "specificity >= target", chosen on the
    validation predictions when given (else on the scored ones, which is optimistic), and
    the sensitivity, specificity, PPV and NPV they give on the scored predictions, with
    patient-bootstrap CIs.

    The CIs hold the threshold fixed: they do not include the uncertainty of choosing it.

    Args:
        y, p: labels (NaN: unknown, dropped) and scores of the scored set (test).
        patient_ids: the scored rows' patients (None: each image its own patient).
        val_y, val_p: labels and scores where thresholds are chosen (validation); None:
            choose on ``y``, ``p``.
        targets: required sensitivities and specificities, each in (0, 1].
        n_boot: bootstrap resamples of patients (0: no CIs).
        seed: the bootstrap's seed.
        level: coverage of the CIs.

    Returns:
        One dict per rule, sensitivity rules first: ``rule`` ("sensitivity >= 0.90"),
        ``criterion``, ``target``, ``chosen_on`` ("validation", or "test (optimistic: no
        validation predictions)"), ``threshold`` (NaN when the choosing set has one
        class), and ``sensitivity``, ``specificity``, ``ppv``, ``npv``, each ``{"value",
        "ci_low", "ci_high"}``.

    Raises:
        UsmtlError: bad labels, scores or targets, or only one of ``val_y``/``val_p``.

    Example:
        >>> points = operating_points([1, 1, 0, 0, 1, 0], [0.9, 0.6, 0.2, 0.7, 0.8, 0.1],
        ...                           None, targets=(0.9,), n_boot=0)
        >>> [(d["rule"], d["threshold"], d["sensitivity"]["value"]) for d in points]
        [('sensitivity >= 0.90', 0.6, 1.0), ('specificity >= 0.90', 0.8, 0.6666666666666666)]
    """
    from usmtl.evaluation import stats

    if (val_y is None) != (val_p is None):
        raise UsmtlError(f"Validation labels and scores come together. Received: val_y "
                         f"{'given' if val_y is not None else 'None'}, val_p "
                         f"{'given' if val_p is not None else 'None'}")
    targets = [_check_target(t) for t in targets]
    y_all, p_all = np.asarray(y, float).ravel(), np.asarray(p, float).ravel()
    y_known, p_known = _known(y_all, p_all)
    if val_y is None:
        choose_y, choose_p, chosen_on = y_known, p_known, "test (optimistic: no validation predictions)"
    else:
        choose_y, choose_p = _known(val_y, val_p)
        chosen_on = "validation"
    choosers = {"sensitivity": threshold_for_sensitivity,
                "specificity": threshold_for_specificity}
    points = []
    for criterion in RULES:
        for target in targets:
            threshold = choosers[criterion](choose_y, choose_p, target)
            point = {"rule": f"{criterion} >= {target:.2f}", "criterion": criterion,
                     "target": target, "chosen_on": chosen_on, "threshold": threshold}
            nan = {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan}
            if math.isnan(threshold):
                point.update(sensitivity=dict(nan), specificity=dict(nan), ppv=dict(nan),
                             npv=dict(nan))
                points.append(point)
                continue
            # bootstrap_metrics and patient_bootstrap_ci draw the same resamples for a seed
            boot = stats.bootstrap_metrics(y_all, p_all, patient_ids, threshold, n_boot, seed,
                                           level)
            npv = {"value": _npv(y_known, p_known, threshold), "ci_low": math.nan,
                   "ci_high": math.nan}
            if n_boot > 0 and len(y_known):
                npv["ci_low"], npv["ci_high"] = stats.patient_bootstrap_ci(
                    y_all, p_all, patient_ids, lambda a, b: _npv(a, b, threshold), n_boot,
                    seed, level)
            point.update(sensitivity=boot["sensitivity"], specificity=boot["specificity"],
                         ppv=boot["precision"], npv=npv)
            points.append(point)
    return points
