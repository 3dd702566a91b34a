"""Binary metrics that skip unknown labels (NaN), as the paper reports them: accuracy,
sensitivity, specificity, precision and F1 at a threshold, and ROC AUC.

Keras' compiled metrics ignore per-output sample weights, so a head whose labels are all
unknown would still report an AUC; these functions mask explicitly instead.

Example:
    >>> import numpy as np
    >>> from usmtl.evaluation.metrics import binary_metrics
    >>> m = binary_metrics(np.array([0, 1, np.nan, 1]), np.array([0.2, 0.8, 0.9, 0.4]))
    >>> m["n"], m["auc"], m["sensitivity"]
    (3, 1.0, 0.5)
"""

from __future__ import annotations

import math

import numpy as np

METRICS = ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1")


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else math.nan


def check_binary(y_true, y_score) -> tuple[np.ndarray, np.ndarray]:
    """``(y_true, y_score)`` as 1-D float arrays, checked as scikit-learn checks them.

    A label is 0, 1 or NaN (unknown: skipped by the metrics); a score is a number, NaN only
    where the label is unknown. A ``(n, 1)`` column counts as 1-D.

    Raises:
        ValueError: labels outside {0, 1} (or NaN), scores with more than one column, labels
            and scores of different lengths, or a NaN score for a known label.
    """
    y_true, y_score = _column(y_true, "y_true"), _column(y_score, "y_score")
    if len(y_true) != len(y_score):
        raise ValueError(f"Found input variables with inconsistent numbers of samples: "
                         f"y_true has {len(y_true)}, y_score {len(y_score)}. "
                         f"Received: shapes {y_true.shape} and {y_score.shape}")
    bad = ~np.isnan(y_true) & (y_true != 0) & (y_true != 1)
    if bad.any():
        raise ValueError(f"y_true must hold binary labels 0 and 1 (NaN: unknown); "
                         f"{int(bad.sum())} do not. Received: labels "
                         f"{sorted(set(np.unique(y_true[bad]).tolist()))[:5]}")
    missing = np.isnan(y_score) & ~np.isnan(y_true)
    if missing.any():
        raise ValueError(f"y_score contains NaN for {int(missing.sum())} sample(s) with a "
                         f"known label. Received: NaN at index {int(np.flatnonzero(missing)[0])}")
    return y_true, y_score


def _column(values, name: str) -> np.ndarray:
    try:
        array = np.asarray(values, float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numbers. Received: {type(values).__name__}") from None
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per sample; a (n, 1) column is "
                         f"accepted). Received: an array of shape {array.shape}")
    return array


def roc_auc(y_true, y_score) -> float:
    """ROC AUC (Mann-Whitney, ties counted half); NaN when only one class is present.

    Raises:
        ValueError: inputs :func:`check_binary` refuses.
    """
    y_true, y_score = check_binary(y_true, y_score)
    pos, neg = y_score[y_true == 1], y_score[y_true == 0]
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def binary_metrics(y_true, y_score, threshold: float = 0.5) -> dict:
    """Metrics over the rows whose label is known (0 or 1); NaN where undefined.

    Raises:
        ValueError: inputs :func:`check_binary` refuses.
    """
    y_true, y_score = check_binary(y_true, y_score)
    known = ~np.isnan(y_true) & ~np.isnan(y_score)
    y, s = y_true[known], y_score[known]
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    precision = _ratio(tp, tp + fp)
    sensitivity = _ratio(tp, tp + fn)
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    return {
        "n": int(known.sum()),
        "positives": int(np.sum(y == 1)),
        "auc": roc_auc(y, s),
        "accuracy": _ratio(tp + tn, len(y)),
        "sensitivity": sensitivity,
        "specificity": _ratio(tn, tn + fp),
        "precision": precision,
        "f1": f1,
        "tp": tp, "tn": tn, "fp": fp, "fn": fn,
        "threshold": float(threshold),
    }


def format_table(rows: dict[str, dict], columns=("n", "positives") + METRICS) -> str:
    """A fixed-width text table: one row per task. A task with one class among its known
    labels (a child without a positive case) shows no metric, only a footnote saying why."""
    header = ["task"] + list(columns)
    lines, notes = [header], []
    for name, metrics in rows.items():
        n, positives = metrics.get("n"), metrics.get("positives")
        one_class = isinstance(n, int) and isinstance(positives, int) and n > 0 and \
            positives in (0, n)
        if one_class:
            notes.append(f"{name}: no {'positive' if positives == 0 else 'negative'} case "
                         f"among {n} images")
        cells = [name]
        for column in columns:
            value = metrics.get(column, math.nan)
            if one_class and column in METRICS:
                cells.append("-")
            elif isinstance(value, float):
                cells.append("-" if math.isnan(value) else f"{value:.3f}")
            else:
                cells.append(str(value))
        lines.append(cells)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    table = "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                                enumerate(zip(row, widths))) for row in lines)
    return table + ("\n-: not estimable (" + "; ".join(notes) + ")" if notes else "")
