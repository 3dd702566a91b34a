"""The prediction file: one CSV format for every model (CNN runs, exported models, the
radiomics baseline), so evaluation and comparison work on any of them.

Columns: ``image``, ``patient_id``, ``split``, then per task ``p_<task>`` (probability) and
``y_<task>`` (label; empty = unknown), then ``hierarchy_violation`` (1 where some child's
probability exceeds its parent's) and ``violated_edges`` (``parent>child;...``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError


def violations(probabilities: dict[str, np.ndarray], edges) -> tuple[np.ndarray, list[str]]:
    """Per row: whether any ``(parent, child)`` edge has ``p_child > p_parent``, and which."""
    n = len(next(iter(probabilities.values()))) if probabilities else 0
    flags = np.zeros(n, bool)
    names = [[] for _ in range(n)]
    for parent, child in edges:
        if parent not in probabilities or child not in probabilities:
            continue
        bad = np.ravel(probabilities[child]) > np.ravel(probabilities[parent])
        flags |= bad
        for i in np.flatnonzero(bad):
            names[i].append(f"{parent}>{child}")
    return flags, [";".join(v) for v in names]


def predictions_frame(images, patient_ids, splits, probabilities: dict[str, np.ndarray],
                      labels: dict[str, np.ndarray] | None, edges) -> pd.DataFrame:
    """Assemble a prediction file's rows."""
    frame = pd.DataFrame({"image": list(images), "patient_id": list(patient_ids),
                          "split": list(splits)})
    for name, p in probabilities.items():
        frame[f"p_{name}"] = np.ravel(p).astype(float)
        if labels is not None and name in labels:
            frame[f"y_{name}"] = np.ravel(labels[name]).astype(float)
    flags, which = violations(probabilities, edges)
    frame["hierarchy_violation"] = flags.astype(int)
    frame["violated_edges"] = which
    return frame


def prediction_tasks(frame: pd.DataFrame) -> list[str]:
    """Task names present in a prediction frame, in column order."""
    return [c[2:] for c in frame.columns if c.startswith("p_")]


def read_predictions(path: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(path, keep_default_na=True)
    except (OSError, pd.errors.ParserError) as exc:
        raise UsmtlError(f"{path}: cannot read the prediction file ({exc})") from None
    missing = [c for c in ("image", "patient_id") if c not in frame.columns]
    if missing or not prediction_tasks(frame):
        raise UsmtlError(f"{path}: a prediction file needs image, patient_id and p_<task> columns. "
                         f"Received columns: {list(frame.columns)}")
    frame["patient_id"] = frame["patient_id"].astype(str)
    return frame
