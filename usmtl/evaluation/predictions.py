"""The prediction file: one CSV format for every model (CNN runs, exported models, the
radiomics baseline), so evaluation and comparison work on any of them.

Columns: ``image``, ``patient_id``, ``split``, then per task ``p_<task>`` (probability) and
``y_<task>`` (label; empty = unknown), then:

- ``hierarchy_violation``: 1 where some child is predicted positive while its parent is
  negative at the threshold (ALNM without malignancy): the case a reader should look at;
- ``violated_edges``: those edges, as ``parent>child;...``;
- ``hierarchy_excess``: the largest ``p_child - p_parent`` over the edges (positive when a
  child's probability is above its parent's at all).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError


def violations(probabilities: dict[str, np.ndarray], edges, threshold: float = 0.5):
    """Per row: hard violation flag, the violated edges, and the largest soft excess."""
    n = len(next(iter(probabilities.values()))) if probabilities else 0
    flags = np.zeros(n, bool)
    excess = np.full(n, np.nan)
    names = [[] for _ in range(n)]
    for parent, child in edges:
        if parent not in probabilities or child not in probabilities:
            continue
        p_parent, p_child = np.ravel(probabilities[parent]), np.ravel(probabilities[child])
        bad = (p_child >= threshold) & (p_parent < threshold)
        flags |= bad
        excess = np.fmax(excess, p_child - p_parent)
        for i in np.flatnonzero(bad):
            names[i].append(f"{parent}>{child}")
    return flags, [";".join(v) for v in names], excess


def predictions_frame(images, patient_ids, splits, probabilities: dict[str, np.ndarray],
                      labels: dict[str, np.ndarray] | None, edges,
                      threshold: float = 0.5) -> pd.DataFrame:
    """Assemble a prediction file's rows."""
    frame = pd.DataFrame({"image": list(images), "patient_id": list(patient_ids),
                          "split": list(splits)})
    for name, p in probabilities.items():
        frame[f"p_{name}"] = np.ravel(p).astype(float)
        if labels is not None and name in labels:
            frame[f"y_{name}"] = np.ravel(labels[name]).astype(float)
    flags, which, excess = violations(probabilities, edges, threshold)
    frame["hierarchy_violation"] = flags.astype(int)
    frame["violated_edges"] = which
    frame["hierarchy_excess"] = excess
    return frame


def require_threshold(threshold: float, option: str = "--threshold") -> float:
    """``threshold`` when it is a number strictly between 0 and 1 (a probability cut-off);
    else a :class:`UsmtlError` (NaN, 2 or 0 would make every case one class)."""
    if not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
        raise UsmtlError(f"{option} must be a probability strictly between 0 and 1. "
                         f"Received: {threshold!r}")
    return float(threshold)


def prediction_tasks(frame: pd.DataFrame) -> list[str]:
    """Task names present in a prediction frame, in column order."""
    return [c[2:] for c in frame.columns if c.startswith("p_")]


def read_predictions(path: str) -> pd.DataFrame:
    """A prediction file, its values checked (:func:`value_problems`).

    Raises:
        UsmtlError: an unreadable file, missing columns, or every bad value by column and
            line (a probability that is not a number in [0, 1], a label that is not 0, 1
            or empty).
    """
    try:
        frame = pd.read_csv(path, keep_default_na=True)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError,
            UnicodeDecodeError) as exc:
        raise UsmtlError(f"{path}: cannot read the prediction file ({exc})") from None
    missing = [c for c in ("image", "patient_id") if c not in frame.columns]
    if missing or not prediction_tasks(frame):
        raise UsmtlError(f"{path}: a prediction file needs image, patient_id and p_<task> columns. "
                         f"Received columns: {list(frame.columns)}")
    problems = value_problems(frame)
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise UsmtlError(f"{path}: {len(problems)} bad value(s):\n{shown}{more}")
    frame["patient_id"] = frame["patient_id"].astype(str)
    return frame


def value_problems(frame: pd.DataFrame) -> list[str]:
    """``column 'p_alnm' line 7: ... Received: 'high'`` for each probability (``p_``,
    ``raw_``) that is not a number in [0, 1] and each label (``y_``) that is not 0, 1 or
    empty; line 2 is the first row."""
    problems = []
    for column in frame.columns:
        prefix = str(column).split("_", 1)[0] + "_"
        if prefix not in ("p_", "raw_", "y_") or str(column) == prefix:
            continue
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(float)
        if prefix == "y_":
            bad = ~(np.isnan(values) | (values == 0) | (values == 1)) | \
                (np.isnan(values) & frame[column].notna().to_numpy())
            want = "a label must be 0, 1 or empty"
        else:
            bad = ~((values >= 0) & (values <= 1))  # NaN, inf and text included
            want = "a probability must be a number in [0, 1]"
        for i in np.flatnonzero(bad):
            value = frame[column].iloc[i]
            shown = repr(value) if isinstance(value, str) else str(float(value))
            problems.append(f"column {column!r} line {i + 2}: {want}. Received: {shown}")
    return problems
