"""The tables of an evaluation report (:func:`usmtl.evaluation.evaluate.evaluate_predictions`):
``metrics.csv``, ``calibration.csv``, ``operating_points.csv``, ``subgroups_<column>.csv``
as frames, and the compact console table of ``usmtl evaluate``.

Example:
    >>> from usmtl.evaluation.tables import metrics_rows
    >>> report = {"tasks": {"malignancy": {"image": {"auc": {"value": 0.9, "ci_low": 0.8,
    ...                                                      "ci_high": 0.95}}}}}
    >>> metrics_rows(report).to_dict("records")  # doctest: +NORMALIZE_WHITESPACE
    [{'task': 'malignancy', 'display_name': 'Malignancy', 'level': 'image', 'metric': 'auc',
      'value': 0.9, 'ci_low': 0.8, 'ci_high': 0.95}]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from usmtl.evaluation.metrics import METRICS
from usmtl.tasks import display_name


def with_display_names(frame: pd.DataFrame, names: dict | None) -> pd.DataFrame:
    """``frame`` with a ``display_name`` column after its ``task`` column (the task names stay
    the machine-readable key); ``names`` as :func:`usmtl.tasks.display_name` takes them."""
    if "task" not in frame or "display_name" in frame:
        return frame
    frame = frame.copy()
    frame.insert(list(frame.columns).index("task") + 1, "display_name",
                 [display_name(task, names) for task in frame["task"]])
    return frame


def metrics_rows(report: dict) -> pd.DataFrame:
    """Long table: task, display_name, level, metric, value, ci_low, ci_high."""
    rows = []
    for task, entry in report["tasks"].items():
        for level in ("image", "patient", "image_youden"):
            for metric, v in entry.get(level, {}).items():
                rows.append({"task": task, "level": level, "metric": metric, "value": v["value"],
                             "ci_low": v["ci_low"], "ci_high": v["ci_high"]})
    return with_display_names(pd.DataFrame(rows), report.get("display_names"))


def calibration_rows(report: dict) -> pd.DataFrame:
    """calibration.csv: task, display_name, n, metric (brier, ece, intercept, slope), value,
    ci_low, ci_high."""
    rows = [{"task": task, "n": entry["n"], "metric": metric, **value}
            for task, entry in report["tasks"].items()
            for metric, value in entry.get("calibration", {}).items()]
    return with_display_names(
        pd.DataFrame(rows, columns=["task", "n", "metric", "value", "ci_low", "ci_high"]),
        report.get("display_names"))


def operating_point_rows(report: dict) -> pd.DataFrame:
    """operating_points.csv: one row per task and rule, each measure with its CI."""
    rows = []
    for task, entry in report["tasks"].items():
        for point in entry.get("operating_points", []):
            row = {"task": task, **{k: point[k] for k in ("rule", "criterion", "target",
                                                          "chosen_on", "threshold")}}
            for measure in ("sensitivity", "specificity", "ppv", "npv"):
                v = point[measure]
                row[measure], row[f"{measure}_ci_low"], row[f"{measure}_ci_high"] = (
                    v["value"], v["ci_low"], v["ci_high"])
            rows.append(row)
    return with_display_names(pd.DataFrame(rows), report.get("display_names"))


def subgroup_rows(report: dict, column: str) -> pd.DataFrame:
    """subgroups_<column>.csv: every task's subgroup table, with the heterogeneity test on
    the task's overall row."""
    frames = []
    for task, result in report["subgroups"][column].items():
        table = pd.DataFrame(result["table"])
        table.insert(0, "task", task)
        overall = table["kind"] == "overall"
        for key, value in result["heterogeneity"].items():
            column_values = pd.Series(np.where(overall, value, np.nan))
            # counts stay whole numbers beside the blank cells of the group rows
            table[f"heterogeneity_{key}"] = (column_values.astype("Int64") if key in ("df", "k")
                                             else column_values)
        frames.append(table)
    return (with_display_names(pd.concat(frames, ignore_index=True), report.get("display_names"))
            if frames else pd.DataFrame())


def compact_table(report: dict) -> str:
    from usmtl.evaluation.metrics import format_table

    rows = {}
    for task, entry in report["tasks"].items():
        rows[task] = {"cohort": entry.get("cohort", "as labelled"), "n": entry["n"],
                      "positives": entry["positives"],
                      **{m: entry["image"][m]["value"] for m in METRICS}}
    return format_table(rows)
