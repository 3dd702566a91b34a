"""An evaluation report's folder: ``report.md`` (tables a person can paste into a paper, the
figures linked) and :func:`write_report`, which writes it with ``metrics.json``, the CSV
tables (:mod:`usmtl.evaluation.tables`) and the figures (ROC: :mod:`usmtl.evaluation.roc_plot`;
reliability: :mod:`usmtl.evaluation.calibration`; decision curves:
:mod:`usmtl.evaluation.utility`; forest plots: :mod:`usmtl.evaluation.subgroups`).

Example:
    >>> from usmtl.evaluation.evaluate import evaluate_file
    >>> from usmtl.evaluation.report import markdown_report
    >>> report = evaluate_file("test_predictions.csv", "eval")  # doctest: +SKIP
    >>> print(markdown_report(report, "Evaluation"))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os

import pandas as pd

from usmtl.evaluation.cells import cell, format_interval, safe_name
from usmtl.evaluation.metrics import METRICS
from usmtl.evaluation.roc_plot import plot_rocs
from usmtl.evaluation.tables import (calibration_rows, metrics_rows, operating_point_rows,
                                     subgroup_rows)
from usmtl.tasks import display_edge, display_name


def task_text(report: dict, task: str) -> str:
    """A task as report.md's tables show it: its display name (the config's ``display_name``
    carried in ``report["display_names"]``, else derived from the name), ``|`` escaped."""
    return _cell(display_name(task, report.get("display_names")))


def markdown_table(report: dict, level: str = "image") -> str:
    header = "| task | cohort | n | pos | " + " | ".join(METRICS) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 4)]
    for task, entry in report["tasks"].items():
        values = entry.get(level)
        if values is None:
            continue
        n = entry["n"] if level != "patient" else "-"
        lines.append(f"| {task_text(report, task)} | {entry.get('cohort', 'as labelled')} | {n} | "
                     f"{entry['positives'] if level != 'patient' else '-'} | "
                     + " | ".join(format_interval(values[m]) for m in METRICS) + " |")
    return "\n".join(lines)


#: Threshold probabilities of the net-benefit table in report.md (the CSVs hold 0.01-0.99).
DECISION_TABLE_THRESHOLDS = (0.05, 0.10, 0.20, 0.30, 0.50)


def _cell(text) -> str:
    """A markdown table cell: a ``|`` in a group name would split the cell."""
    return str(text).replace("|", "\\|")


def _both_classes(entry: dict) -> bool:
    return 0 < entry.get("positives", 0) < entry.get("n", 0)


def _threshold_text(value) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.3f}"


def _clinical_sections(report: dict, curves: dict | None = None) -> list[str]:
    """report.md's Calibration, Operating points, Decision curves and Subgroups sections."""
    tasks = report["tasks"]
    parts = []
    if any("calibration" in e for e in tasks.values()):
        parts += ["## Calibration", "",
                  "Intercept: calibration-in-the-large (0 is ideal; above 0 the model "
                  "underestimates risk). Slope: of logit(p) in a logistic recalibration (1 is "
                  "ideal; below 1 the scores are too extreme) (Van Calster et al., BMC Med "
                  "2019). ECE over 10 equal-width bins. 95% CIs resample patients.", "",
                  "| task | cohort | n | Brier | ECE | intercept | slope |", "|---|---|---|---|---|---|---|"]
        for task, e in tasks.items():
            if "calibration" not in e:
                continue
            c = e["calibration"]
            parts.append(f"| {task_text(report, task)} | {e.get('cohort', 'as labelled')} | {e['n']} | "
                         + " | ".join(format_interval(c.get(m)) for m in ("brier", "ece", "intercept", "slope"))
                         + " |")
        parts.append("")
        parts += [f"![Reliability: {task_text(report, task)}](reliability_{task}.png)"
                  for task, e in tasks.items()
                  if "calibration" in e and _both_classes(e)] + [""]
    if any(e.get("operating_points") for e in tasks.values()):
        parts += ["## Operating points", "",
                  "Thresholds chosen for each rule on the validation predictions and applied "
                  "unchanged here; chosen on the scored set itself they are optimistic, and "
                  "marked so. Positive: score >= threshold. CIs hold the threshold fixed.", "",
                  "| task | rule | chosen on | threshold | sensitivity | specificity | PPV | NPV |",
                  "|---|---|---|---|---|---|---|---|"]
        for task, e in tasks.items():
            for point in e.get("operating_points", []):
                parts.append(f"| {task_text(report, task)} | {point['rule']} | {point['chosen_on']} | "
                             f"{_threshold_text(point['threshold'])} | "
                             + " | ".join(format_interval(point.get(m))
                                          for m in ("sensitivity", "specificity", "ppv", "npv"))
                             + " |")
        parts.append("")
    drawn = [task for task, e in tasks.items() if _both_classes(e)]
    if drawn:
        parts += ["## Decision curves", "",
                  "Net benefit = TP/n - FP/n * pt/(1 - pt) of calling positive the images with "
                  "score >= pt, against treating all and none (Vickers & Elkin, Med Decis Making "
                  "2006). Every threshold 0.01-0.99 is in decision_curve_<task>.csv.", ""]
        if curves:
            header = " | ".join(f"pt {t:.2f}" for t in DECISION_TABLE_THRESHOLDS)
            parts += [f"| task | strategy | {header} |",
                      "|---|---|" + "---|" * len(DECISION_TABLE_THRESHOLDS)]
            for task in drawn:
                curve = curves.get(task)
                if curve is None:
                    continue
                at = curve.set_index(curve["threshold"].round(2))
                for column, name in (("model", "model"), ("treat_all", "treat all")):
                    cells = " | ".join(f"{at[column].get(t, math.nan):.3f}"
                                       for t in DECISION_TABLE_THRESHOLDS)
                    parts.append(f"| {task_text(report, task)} | {name} | {cells} |")
            parts.append("")
        parts += [f"![Decision curve: {task_text(report, task)}](decision_curve_{task}.png)"
                  for task in drawn] + [""]
    for column, per_task in report.get("subgroups", {}).items():
        parts += [f"## Subgroups by {column}", "",
                  f"Rows with no {column} form the group (missing). AUC CIs resample patients "
                  f"within each group; heterogeneity: Cochran's Q over the testable groups' AUCs "
                  f"(inverse DeLong variance weights), I² the share of spread beyond chance.", ""]
        for task, result in per_task.items():
            parts += [f"### {task_text(report, task)}", "",
                      "| group | n | pos | patients | AUC | sensitivity | specificity | note |",
                      "|---|---|---|---|---|---|---|---|"]
            for row in result["table"]:
                cells = [format_interval({"value": row[m], "ci_low": row[f"{m}_ci_low"],
                               "ci_high": row[f"{m}_ci_high"]})
                         for m in ("auc", "sensitivity", "specificity")]
                group = "all" if row["kind"] == "overall" else _cell(row["group"])
                parts.append(f"| {group} | {row['n']} | {row['positives']} | {row['n_patients']} | "
                             + " | ".join(cells) + f" | {row['note']} |")
            h = result["heterogeneity"]
            if h["k"] >= 2:
                parts.append(f"\nHeterogeneity over {h['k']} groups: Q = {h['q']:.2f}, "
                             f"df = {h['df']}, p = {h['p']:.3g}, I² = {100 * h['i2']:.0f}%.")
            else:
                parts.append(f"\nHeterogeneity: not testable ({h['k']} testable group(s)).")
            parts += ["", f"![AUC of {task_text(report, task)} by {column}](forest_{safe_name(column)}_{task}.png)"
                      if h["k"] else "", ""]  # plot_forest draws no plot without a testable group
    return parts


def _ci_text(n_boot: int) -> str:
    return (f"95% CIs from {n_boot} bootstrap resamples of patients" if n_boot > 0
            else "no CIs (--bootstrap 0)")


def markdown_report(report: dict, title: str, curves: dict | None = None) -> str:
    """report.md: tables a person can paste into a paper, the figures linked; ``curves``
    (``{task: decision curve}``) adds a net-benefit table."""
    parts = [f"# {title}", "",
             f"{report['n_images']} images of {report['n_patients']} patients. Threshold "
             f"{report['threshold']}; {_ci_text(report['bootstrap'])}. Each task is scored within its cohort (n images with a known label).",
             ""] + [f"- {note}" for note in report.get("notes", [])] + [
             "", "## Image level", "", markdown_table(report, "image"), "",
             f"## Patient level (score = {report['patient_aggregation']} of a patient's images)",
             "", markdown_table(report, "patient"), ""]
    if any("image_youden" in e for e in report["tasks"].values()):
        thresholds = ", ".join(f"{task_text(report, t)}: {cell(e['youden_threshold'])}" for t, e in
                               report["tasks"].items() if "youden_threshold" in e)
        parts += ["## Image level at the Youden threshold chosen on validation", "",
                  f"Thresholds: {thresholds}", "", markdown_table(report, "image_youden"), ""]
    parts += _clinical_sections(report, curves)
    if report["inconsistency"]:
        parts += ["## Inconsistent predictions", "",
                  "Hard: child >= threshold while parent < threshold. Soft: child score above "
                  "parent score.", "", "| edge | n | hard | soft |", "|---|---|---|---|"]
        for edge, r in report["inconsistency"].items():
            edge_text = _cell(display_edge(edge, report.get("display_names")))
            parts.append(f"| {edge_text} | {r['n']} | {r['hard']:.3f} ({r['hard_count']}) | "
                         f"{r['soft']:.3f} ({r['soft_count']}) |")
        parts.append("")
    if report.get("skipped_tasks"):
        parts += ["## Tasks not scored", "",
                  "Skipped on request (--skip-unlabelled): they have no labels.", ""]
        parts += [f"- {task_text(report, task)}: {why}"
                  for task, why in report["skipped_tasks"].items()] + [""]
    parts += ["![ROC curves](roc_all.png)", ""]
    return "\n".join(parts)


def write_report(report: dict, frame: pd.DataFrame, out_dir: str, title: str) -> None:
    """Write metrics.json, metrics.csv, report.md and ROC curves; calibration.csv,
    reliability_<task>.png, operating_points.csv, decision_curve_<task>.csv and .png; with
    subgroups, subgroups_<column>.csv and forest_<column>_<task>.png."""
    from usmtl.evaluation.calibration import plot_reliability
    from usmtl.evaluation.subgroups import plot_forest
    from usmtl.evaluation.utility import decision_curves, plot_decision_curves
    from usmtl.run import write_csv_atomic, write_json_atomic, write_text_atomic

    os.makedirs(out_dir, exist_ok=True)
    write_json_atomic(os.path.join(out_dir, "metrics.json"), report)
    write_csv_atomic(os.path.join(out_dir, "metrics.csv"), metrics_rows(report))
    names = report.get("display_names")
    if names:  # the figures' titles (reliability, decision curves) read them from the frame
        frame.attrs["display_names"] = names
    plot_rocs(frame, out_dir, names=names, n_boot=report["bootstrap"])
    tasks = list(report["tasks"])
    if any("calibration" in e for e in report["tasks"].values()):
        write_csv_atomic(os.path.join(out_dir, "calibration.csv"), calibration_rows(report))
        plot_reliability(frame, out_dir, tasks=tasks)
    if any(e.get("operating_points") for e in report["tasks"].values()):
        write_csv_atomic(os.path.join(out_dir, "operating_points.csv"),
                         operating_point_rows(report))
    curves = decision_curves(frame, tasks=tasks)
    for task, curve in curves.items():
        write_csv_atomic(os.path.join(out_dir, f"decision_curve_{task}.csv"), curve)
    plot_decision_curves(frame, out_dir, tasks=tasks)
    for column, per_task in report.get("subgroups", {}).items():
        write_csv_atomic(os.path.join(out_dir, f"subgroups_{safe_name(column)}.csv"),
                         subgroup_rows(report, column))
        for task, result in per_task.items():
            plot_forest(pd.DataFrame(result["table"]), task, column,
                        os.path.join(out_dir, f"forest_{safe_name(column)}_{task}.png"),
                        display_name(task, names))
    write_text_atomic(os.path.join(out_dir, "report.md"), markdown_report(report, title, curves))
