"""``usmtl evaluate``: per-task metrics with patient-bootstrap CIs, Youden thresholds, patient-
level results, inconsistency rates and ROC curves, for a run or any prediction file.

Images of one patient are correlated, so every confidence interval resamples patients, not
images (:func:`usmtl.evaluation.stats.bootstrap_metrics`).

Each task is scored within its cohort (:mod:`usmtl.tasks`): a run's prediction files carry
labels already restricted to it (ALNM known for the malignant masses only, as in the paper),
and every output states each task's cohort and n. For other prediction files, ``cohorts``
(``--cohort alnm=malignancy``) restricts a child to the rows whose parent label is 1.

Every task with predictions must have labels (a ``y_<task>`` column with at least one known
label): a task without is an error naming it, never an empty table, unless the caller
passes ``skip_unlabelled=True`` (the report then lists it under ``skipped_tasks``). Even
then, a file with no labelled task at all is an error.

Clinical validation (issue 14): per task the calibration (Brier, ECE, intercept, slope:
:mod:`usmtl.evaluation.calibration`), operating points for "sensitivity >= 0.90/0.95" and
"specificity >= 0.90/0.95" chosen on the validation predictions
(:mod:`usmtl.evaluation.utility`), decision curves, and with ``by`` (``--by COLUMN``) per-
group metrics with a heterogeneity test and forest plots (:mod:`usmtl.evaluation.subgroups`).

Example:
    >>> from usmtl.evaluation.evaluate import evaluate_run
    >>> report = evaluate_run("runs/quickstart", n_boot=200)  # doctest: +SKIP
    >>> report["tasks"]["malignancy"]["image"]["auc"]["value"]  # doctest: +SKIP
    0.97
"""

from __future__ import annotations

import math
import os
import re
import sys

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError
from usmtl.evaluation.cells import cell
from usmtl.evaluation.metrics import METRICS, binary_metrics
from usmtl.evaluation.predictions import prediction_tasks, read_predictions, require_threshold
from usmtl.evaluation import stats
from usmtl.evaluation.roc_plot import plot_rocs
from usmtl.tasks import display_name, display_names
from usmtl.evaluation.scope import (hierarchy_on_one_scale, require_model, scores_note, scope_note,
                                    select_split)

TEST_PREDICTIONS = "test_predictions.csv"


def parse_edges(text: str | None) -> list[tuple[str, str]]:
    """``"malignancy>alnm,alnm>aln_ge_2"`` -> ``[("malignancy", "alnm"), ...]``."""
    if not text:
        return []
    edges = []
    for item in text.split(","):
        parts = [p.strip() for p in item.split(">")]
        if len(parts) != 2 or not all(parts):
            raise UsmtlError(f"Edges look like parent>child,parent>child. Received: {text!r}")
        edges.append((parts[0], parts[1]))
    return edges


def parse_cohorts(text: str | None) -> dict[str, str]:
    """``"alnm=malignancy,idc=malignancy"`` -> ``{"alnm": "malignancy", ...}``: score each
    child only where the parent task's label is 1."""
    if not text:
        return {}
    cohorts = {}
    for item in text.split(","):
        parts = [p.strip() for p in item.split("=")]
        if len(parts) != 2 or not all(parts):
            raise UsmtlError(f"Cohorts look like child=parent,child=parent. Received: {text!r}")
        cohorts[parts[0]] = parts[1]
    return cohorts


def restrict_to_cohorts(frame: pd.DataFrame, cohorts: dict[str, str]) -> pd.DataFrame:
    """A copy of ``frame`` whose ``y_<child>`` is unknown wherever ``y_<parent>`` is not 1."""
    frame = frame.copy()
    for child, parent in cohorts.items():
        for column in (f"y_{child}", f"y_{parent}"):
            if column not in frame:
                raise UsmtlError(f"Cohort {child}={parent} needs the label column {column} in the "
                                 f"predictions. Received columns: {list(frame.columns)}")
        inside = frame[f"y_{parent}"].to_numpy(float) == 1
        frame[f"y_{child}"] = np.where(inside, frame[f"y_{child}"].to_numpy(float), np.nan)
    return frame


def unlabelled_tasks(frame: pd.DataFrame) -> dict[str, str]:
    """``{task: why}`` for the tasks of a prediction frame that cannot be scored: no
    ``y_<task>`` column, or no known label in it."""
    missing = {}
    for task in prediction_tasks(frame):
        column = f"y_{task}"
        if column not in frame:
            missing[task] = f"no {column} column"
        elif not np.isfinite(pd.to_numeric(frame[column], errors="coerce").to_numpy(float)).any():
            missing[task] = f"{column} has no known label"
    return missing


def check_labels(frame: pd.DataFrame, skip_unlabelled: bool = False,
                 source: str = "the predictions") -> dict[str, str]:
    """Raise a :class:`UsmtlError` naming every task of ``frame`` that has no labels, unless
    ``skip_unlabelled``; even then raise when no task has labels. Returns the skipped
    ``{task: why}``."""
    missing = unlabelled_tasks(frame)
    refuse_unlabelled(missing, prediction_tasks(frame), skip_unlabelled, ("scored", "score"),
                      nothing=f"Nothing to evaluate: no task of {source} has labels",
                      which=f"of {source} have no labels",
                      received=f" Received columns: {list(frame.columns)}")
    return missing


LABELS_HINT = ("Predict from a manifest that has the tasks' label columns ('usmtl predict' and "
               "'usmtl radiomics predict' carry them as y_<task>)")


def refuse_unlabelled(missing: dict, tasks, skip: bool, verb: tuple[str, str], nothing: str,
                      which: str, received: str = "") -> None:
    """The one rule of ``evaluate`` and ``compare`` for tasks without labels: none labelled
    is always an error; some unlabelled is an error naming them unless ``skip``.

    Args:
        missing: ``{task: why it has no labels}``.
        tasks: every task asked for.
        skip: ``--skip-unlabelled``.
        verb: ``("scored", "score")`` or ``("compared", "compare")``.
        nothing, which, received: the subject of the two messages, and an end for the first.

    Raises:
        UsmtlError: as above, with the reasons and how to fix it.
    """
    listing = "; ".join(f"{task}: {why}" for task, why in missing.items())
    if missing and len(missing) == len(list(tasks)):
        raise UsmtlError(f"{nothing} ({listing}). {LABELS_HINT}.{received}")
    if missing and not skip:
        labelled = ", ".join(t for t in tasks if t not in missing)
        raise UsmtlError(f"Task(s) {', '.join(missing)} {which} ({listing}), so they cannot be "
                         f"{verb[0]}. {LABELS_HINT}, or skip them explicitly (--skip-unlabelled; "
                         f"skip_unlabelled=True in Python) to {verb[1]} only {labelled}")


def _labels_and_scores(frame: pd.DataFrame, task: str):
    if f"y_{task}" not in frame:
        raise UsmtlError(f"Task {task!r} has no labels (y_{task}) in the predictions; "
                         f"evaluate needs a manifest with its label column")
    return frame[f"y_{task}"].to_numpy(float), frame[f"p_{task}"].to_numpy(float)


def check_by_columns(frame: pd.DataFrame, by, source: str = "the predictions") -> list[str]:
    """The ``by`` column names as a list, each checked to be a column of ``frame``.

    Raises:
        UsmtlError: a column is missing, naming it and the columns available.
    """
    by = [by] if isinstance(by, str) else list(by or [])
    missing = [c for c in by if c not in frame.columns]
    if missing:
        raise UsmtlError(f"No column {', '.join(repr(c) for c in missing)} in {source} to form "
                         f"subgroups (--by). Received columns: {list(frame.columns)}")
    return by


def evaluate_predictions(frame: pd.DataFrame, edges=(), threshold: float = 0.5,
                         val_frame: pd.DataFrame | None = None, patient_how: str = "mean",
                         n_boot: int = 1000, seed: int = 0,
                         cohorts: dict[str, str] | None = None, skip_unlabelled: bool = False,
                         source: str = "the predictions", by: list[str] | None = None,
                         targets=(0.90, 0.95)) -> dict:
    """Metrics of a prediction frame; thresholds chosen on ``val_frame`` when given.

    ``cohorts`` maps a task to the description of its cohort, stated in the report beside
    its n (the labels are expected to be restricted to it already); others read "as
    labelled".

    Besides the metrics at ``threshold``, each task's entry holds ``calibration``
    (:func:`usmtl.evaluation.calibration.calibration_metrics`) and ``operating_points``
    (:func:`usmtl.evaluation.utility.operating_points` for ``targets``, thresholds chosen on
    ``val_frame``, else on ``frame`` itself, marked optimistic). With ``by`` (columns of
    ``frame``), ``report["subgroups"][column][task]`` holds ``{"table": [rows of
    :func:`usmtl.evaluation.subgroups.subgroup_metrics`], "heterogeneity": {q, df, p, i2,
    k, pooled_auc}}``.

    Raises:
        UsmtlError: a task has no labels (no ``y_<task>`` column, or none known), naming it,
            unless ``skip_unlabelled`` (then it is left out and listed in the report's
            ``skipped_tasks``); or no task has labels at all. ``source`` names the frame in
            the message. A ``by`` column missing from ``frame``, naming it.
    """
    require_threshold(threshold)
    from usmtl.evaluation.calibration import calibration_metrics
    from usmtl.evaluation.subgroups import subgroup_metrics, table_heterogeneity
    from usmtl.evaluation.utility import operating_points

    cohorts = cohorts or {}
    if len(frame) == 0:
        raise UsmtlError("No predictions to evaluate (empty frame)")
    skipped = check_labels(frame, skip_unlabelled, source)
    by = check_by_columns(frame, by, source)  # before any bootstrap: fail fast
    report = {"threshold": threshold, "patient_aggregation": patient_how, "n_images": len(frame),
              "n_patients": int(frame["patient_id"].nunique()), "bootstrap": n_boot, "tasks": {},
              "skipped_tasks": skipped}
    patients = frame["patient_id"].astype(str).to_numpy()
    for task in prediction_tasks(frame):
        if task in skipped:
            continue
        y, p = _labels_and_scores(frame, task)
        outside = p[~np.isnan(y) & ((p < 0) | (p > 1))]
        if len(outside):
            raise UsmtlError(f"Task {task!r}: p_{task} must hold probabilities in [0, 1]; "
                             f"calibration and decision curves read them as risks. Received: "
                             f"{outside[:5].tolist()}")
        entry = {"image": stats.bootstrap_metrics(y, p, patients, threshold, n_boot, seed)}
        point = binary_metrics(y, p, threshold)
        entry["confusion"] = {k: point[k] for k in ("tp", "fp", "fn", "tn")}
        entry["n"], entry["positives"] = point["n"], point["positives"]
        entry["cohort"] = cohorts.get(task, "as labelled")
        py, pp, pids = stats.aggregate_patients(y, p, patients, how=patient_how)
        entry["patient"] = stats.bootstrap_metrics(py, pp, pids, threshold, n_boot, seed)
        vy = vp = None
        if val_frame is not None and f"y_{task}" in val_frame:
            vy, vp = _labels_and_scores(val_frame, task)
            youden = stats.youden_threshold(vy, vp)
            entry["youden_threshold"] = youden
            if not math.isnan(youden):
                entry["image_youden"] = stats.bootstrap_metrics(y, p, patients, youden, n_boot, seed)
        entry["calibration"] = calibration_metrics(y, p, patients, n_boot, seed)
        entry["operating_points"] = operating_points(y, p, patients, vy, vp, targets, n_boot, seed)
        report["tasks"][task] = entry
    report["inconsistency"], notes = hierarchy_on_one_scale(frame, list(edges), threshold)
    report["notes"] = [scores_note(frame)] + notes
    report["subgroups"] = {}
    for column in by:
        values = frame[column].to_numpy()
        report["subgroups"][column] = {}
        for task in report["tasks"]:
            table = subgroup_metrics(frame, task, values, threshold, n_boot, seed)
            table["testable"] = table["testable"].astype(bool)
            report["subgroups"][column][task] = {"table": table.to_dict("records"),
                                                 "heterogeneity": table_heterogeneity(table)}
    return report


def metrics_rows(report: dict) -> pd.DataFrame:
    """Long table: task, level, metric, value, ci_low, ci_high."""
    rows = []
    for task, entry in report["tasks"].items():
        for level in ("image", "patient", "image_youden"):
            for metric, v in entry.get(level, {}).items():
                rows.append({"task": task, "level": level, "metric": metric, "value": v["value"],
                             "ci_low": v["ci_low"], "ci_high": v["ci_high"]})
    return pd.DataFrame(rows)


def markdown_table(report: dict, level: str = "image") -> str:
    header = "| task | cohort | n | pos | " + " | ".join(METRICS) + " |"
    lines = [header, "|" + "---|" * (len(METRICS) + 4)]
    for task, entry in report["tasks"].items():
        values = entry.get(level)
        if values is None:
            continue
        n = entry["n"] if level != "patient" else "-"
        lines.append(f"| {task} | {entry.get('cohort', 'as labelled')} | {n} | "
                     f"{entry['positives'] if level != 'patient' else '-'} | "
                     + " | ".join(format_interval(values[m]) for m in METRICS) + " |")
    return "\n".join(lines)


#: Threshold probabilities of the net-benefit table in report.md (the CSVs hold 0.01-0.99).
DECISION_TABLE_THRESHOLDS = (0.05, 0.10, 0.20, 0.30, 0.50)


def safe_name(text) -> str:
    """``text`` usable in a file name: other characters than letters, digits, ``.``, ``_``
    and ``-`` become ``_`` (a ``--by`` column "scanner model" -> "scanner_model")."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("_") or "column"


def _cell(text) -> str:
    """A markdown table cell: a ``|`` in a group name would split the cell."""
    return str(text).replace("|", "\\|")


def format_interval(v: dict | None) -> str:
    """``{"value", "ci_low", "ci_high"}`` as ``0.812 (0.786-0.838)``, or ``-0.711 (-1.045 to
    -0.426)`` when a bound is negative; ``-`` for a missing value. Every report's cells."""
    if v is None or v.get("value") is None or math.isnan(v["value"]):
        return "-"
    low, high = v.get("ci_low", math.nan), v.get("ci_high", math.nan)
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return f"{v['value']:.3f}"
    sep = " to " if min(low, high, v["value"]) < 0 else "-"
    return f"{v['value']:.3f} ({low:.3f}{sep}{high:.3f})"


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
            parts.append(f"| {task} | {e.get('cohort', 'as labelled')} | {e['n']} | "
                         + " | ".join(format_interval(c.get(m)) for m in ("brier", "ece", "intercept", "slope"))
                         + " |")
        parts.append("")
        parts += [f"![Reliability: {task}](reliability_{task}.png)" for task, e in tasks.items()
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
                parts.append(f"| {task} | {point['rule']} | {point['chosen_on']} | "
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
                    parts.append(f"| {task} | {name} | {cells} |")
            parts.append("")
        parts += [f"![Decision curve: {task}](decision_curve_{task}.png)" for task in drawn] + [""]
    for column, per_task in report.get("subgroups", {}).items():
        parts += [f"## Subgroups by {column}", "",
                  f"Rows with no {column} form the group (missing). AUC CIs resample patients "
                  f"within each group; heterogeneity: Cochran's Q over the testable groups' AUCs "
                  f"(inverse DeLong variance weights), I² the share of spread beyond chance.", ""]
        for task, result in per_task.items():
            parts += [f"### {task}", "",
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
            parts += ["", f"![AUC of {task} by {column}](forest_{safe_name(column)}_{task}.png)"
                      if h["k"] else "", ""]  # plot_forest draws no plot without a testable group
    return parts


def markdown_report(report: dict, title: str, curves: dict | None = None) -> str:
    """report.md: tables a person can paste into a paper, the figures linked; ``curves``
    (``{task: decision curve}``) adds a net-benefit table."""
    parts = [f"# {title}", "",
             f"{report['n_images']} images of {report['n_patients']} patients. Threshold "
             f"{report['threshold']}; 95% CIs from {report['bootstrap']} bootstrap resamples of "
             f"patients. Each task is scored within its cohort (n images with a known label).",
             ""] + [f"- {note}" for note in report.get("notes", [])] + [
             "", "## Image level", "", markdown_table(report, "image"), "",
             f"## Patient level (score = {report['patient_aggregation']} of a patient's images)",
             "", markdown_table(report, "patient"), ""]
    if any("image_youden" in e for e in report["tasks"].values()):
        thresholds = ", ".join(f"{t}: {cell(e['youden_threshold'])}" for t, e in
                               report["tasks"].items() if "youden_threshold" in e)
        parts += ["## Image level at the Youden threshold chosen on validation", "",
                  f"Thresholds: {thresholds}", "", markdown_table(report, "image_youden"), ""]
    parts += _clinical_sections(report, curves)
    if report["inconsistency"]:
        parts += ["## Inconsistent predictions", "",
                  "Hard: child >= threshold while parent < threshold. Soft: child score above "
                  "parent score.", "", "| edge | n | hard | soft |", "|---|---|---|---|"]
        for edge, r in report["inconsistency"].items():
            parts.append(f"| {edge} | {r['n']} | {r['hard']:.3f} ({r['hard_count']}) | "
                         f"{r['soft']:.3f} ({r['soft_count']}) |")
        parts.append("")
    if report.get("skipped_tasks"):
        parts += ["## Tasks not scored", "",
                  "Skipped on request (--skip-unlabelled): they have no labels.", ""]
        parts += [f"- {task}: {why}" for task, why in report["skipped_tasks"].items()] + [""]
    parts += ["![ROC curves](roc_all.png)", ""]
    return "\n".join(parts)


def calibration_rows(report: dict) -> pd.DataFrame:
    """calibration.csv: task, n, metric (brier, ece, intercept, slope), value, ci_low, ci_high."""
    rows = [{"task": task, "n": entry["n"], "metric": metric, **value}
            for task, entry in report["tasks"].items()
            for metric, value in entry.get("calibration", {}).items()]
    return pd.DataFrame(rows, columns=["task", "n", "metric", "value", "ci_low", "ci_high"])


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
    return pd.DataFrame(rows)


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
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


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
    plot_rocs(frame, out_dir)
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
                        display_name(task, frame.attrs.get("display_names")))
    write_text_atomic(os.path.join(out_dir, "report.md"), markdown_report(report, title, curves))


def run_predictions(run_dir: str, manifest: str | None = None, split: str = "test",
                    calibrated: bool = True) -> pd.DataFrame:
    """Predictions of a run on one split of its manifest (cached as ``<split>_predictions.csv``
    when the run's own manifest is used; redone when :meth:`usmtl.run.Run.stale_predictions`
    says), with the run's recalibration applied when it has one
    (``usmtl calibrate``; the cache holds the raw scores)."""
    from usmtl.evaluation.recalibrate import apply_calibration
    from usmtl.run import Run, write_csv_atomic
    from usmtl.tasks import TaskGraph

    run = Run.open(run_dir)
    run_manifest = run.manifest_path
    own = manifest is None or os.path.abspath(manifest) == run_manifest
    cache = run.predictions_path(split)
    stale = run.stale_predictions(split) if own else None
    if own and stale is None:
        frame = read_predictions(cache)
    else:
        from usmtl.predict import predict

        if own and os.path.isfile(cache):
            require_model(run, cache, stale)
            print(f"Note: predicting the {split} split again: {stale}", file=sys.stderr)
        frame = predict(run_dir, manifest or run_manifest, split=split, calibrated=False)
        if own:
            write_csv_atomic(cache, frame)
            run.write_predictions_stamp(split)
    edges = TaskGraph.from_config(run.config().tasks).edges
    return apply_calibration(frame, run.calibration() if calibrated else None, edges)


def _needed(frame: pd.DataFrame, by) -> list[str]:
    """The ``by`` columns the prediction frame lacks (its own columns come first)."""
    return [c for c in ([by] if isinstance(by, str) else list(by or [])) if c not in frame.columns]


def add_manifest_columns(frame: pd.DataFrame, by, rows: pd.DataFrame,
                         source: str) -> pd.DataFrame:
    """A copy of ``frame`` with the ``by`` columns it lacks taken from ``rows``: the manifest
    rows the predictions were made from, in the same order (as :func:`usmtl.predict.predict`
    writes them).

    Raises:
        UsmtlError: a column in neither, naming it and both sets of columns; ``rows`` and
            ``frame`` differing in length or in their images, row by row.
    """
    need = _needed(frame, by)
    if not need:
        return frame
    missing = [c for c in need if c not in rows.columns]
    if missing:
        raise UsmtlError(f"No column {', '.join(repr(c) for c in missing)} in the predictions or in "
                         f"{source} to form subgroups (--by). Received columns: predictions "
                         f"{list(frame.columns)}; manifest {list(rows.columns)}")
    if len(rows) != len(frame):
        raise UsmtlError(f"The {len(frame)} predictions and the {len(rows)} rows of {source} differ "
                         f"in number, so --by {', '.join(need)} cannot be matched row by row (are "
                         f"the cached predictions stale?). Evaluate the prediction CSV with "
                         f"--manifest instead, which matches by image. Received: {len(frame)} and "
                         f"{len(rows)} rows")
    ours, theirs = frame["image"].astype(str).to_numpy(), rows["image"].astype(str).to_numpy()
    differ = np.flatnonzero(ours != theirs)
    if len(differ):
        i = int(differ[0])
        raise UsmtlError(f"The predictions and the rows of {source} are not in the same order "
                         f"({len(differ)} row(s) differ, first row {i}: {ours[i]!r} against "
                         f"{theirs[i]!r}), so --by {', '.join(need)} cannot be matched row by row. "
                         f"Received: {source}")
    frame = frame.copy()
    for column in need:
        frame[column] = rows[column].to_numpy()
    return frame


def merge_manifest_columns(frame: pd.DataFrame, by, manifest: str | None,
                           source: str = "the predictions") -> pd.DataFrame:
    """A copy of ``frame`` with the ``by`` columns it lacks read from the ``manifest`` CSV,
    matched by the ``image`` column as written in both files.

    An image listed twice in the manifest is accepted only when its rows agree on those
    columns (two lesions of one image on one scanner); otherwise the match is ambiguous.

    Raises:
        UsmtlError: a column in neither (or no manifest given), naming it and the columns
            available; a manifest without ``image``; an image repeated with different values;
            a prediction image missing from the manifest.
    """
    need = _needed(frame, by)
    if not need:
        return frame
    if manifest is None:
        raise UsmtlError(f"No column {', '.join(repr(c) for c in need)} in {source} to form "
                         f"subgroups (--by); pass --manifest to read it from a manifest, matched by "
                         f"image. Received columns: {list(frame.columns)}")
    try:
        rows = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UsmtlError(f"{manifest}: cannot read the manifest ({exc})") from None
    missing = [c for c in ["image"] + need if c not in rows.columns]
    if missing:
        raise UsmtlError(f"No column {', '.join(repr(c) for c in missing)} in the predictions or in "
                         f"{manifest} (--by). Received columns: predictions {list(frame.columns)}; "
                         f"manifest {list(rows.columns)}")
    distinct = rows[["image"] + need].drop_duplicates()
    repeated = distinct["image"][distinct["image"].duplicated()].unique()
    if len(repeated):
        raise UsmtlError(f"{manifest}: {len(repeated)} image(s) repeat with different "
                         f"{', '.join(need)}, so the predictions cannot be matched to one row by "
                         f"image. Add the column(s) to the prediction CSV instead. Received: e.g. "
                         f"{list(repeated[:3])}")
    lookup = distinct.set_index("image")
    images = frame["image"].astype(str)
    absent = images[~images.isin(lookup.index)].unique()
    if len(absent):
        raise UsmtlError(f"{len(absent)} image(s) of {source} are not in {manifest} (images are "
                         f"matched as written in both files). Received: e.g. {list(absent[:3])}")
    frame = frame.copy()
    for column in need:
        frame[column] = images.map(lookup[column]).to_numpy()
    return frame


def run_manifest_rows(run_dir: str, manifest: str | None = None, split: str = "test") -> pd.DataFrame:
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


def evaluate_run(run_dir: str, manifest: str | None = None, split: str = "test",
                 threshold: float = 0.5, patient_how: str = "mean", n_boot: int = 1000,
                 seed: int = 0, skip_unlabelled: bool = False,
                 by: list[str] | None = None, out_dir: str | None = None) -> dict:
    """Evaluate a run directory on a split; writes metrics.json, metrics.csv, report.md, ROC
    curves, calibration, operating points and decision curves into ``out_dir`` (default the
    run, or ``RUN/eval-<split>`` for another split or manifest), and subgroup tables with
    ``by``. Another manifest must list the run's own images for its patients of ``split``
    (:func:`usmtl.evaluation.scope.check_other_manifest`).

    Args:
        run_dir: a finished run directory.
        manifest: another manifest (default: the run's own).
        split: the split scored; thresholds (Youden, operating points) come from ``val`` of
            the run's manifest.
        threshold: the probability threshold of ACC, SE, SP, precision and F1.
        patient_how: a patient's score from its images, ``mean`` or ``max``.
        n_boot: bootstrap resamples of patients for the 95% CIs.
        seed: the bootstrap's seed.
        skip_unlabelled: score only the tasks with labels instead of refusing.
        by: columns forming subgroups: from the predictions, else from the manifest rows of
            the split (in the predictions' order).

    Returns:
        The report (``metrics.json``'s content): per task its cohort, n, positives, image-
        and patient-level metrics with CIs, Youden results, ``calibration`` and
        ``operating_points``; the inconsistency rates per edge; ``subgroups``; ``out_dir``.

    Raises:
        UsmtlError: not a run directory, a task without labels (unless ``skip_unlabelled``),
            or a ``by`` column in neither the predictions nor the manifest, or rows that do
            not match the predictions.

    Example:
        >>> from usmtl.evaluation.evaluate import evaluate_run
        >>> report = evaluate_run("runs/paper-hl", n_boot=1000)  # doctest: +SKIP
        >>> report["tasks"]["alnm"]["cohort"], report["tasks"]["alnm"]["n"]  # doctest: +SKIP
        ('malignant = 1', 184)
    """
    from usmtl.run import Run
    from usmtl.tasks import TaskGraph

    from usmtl.evaluation.scope import check_other_manifest

    run = Run.open(run_dir)
    tasks = run.config().tasks
    graph = TaskGraph.from_config(tasks)
    other = check_other_manifest(run_dir, manifest, split) if manifest else ""
    frame = run_predictions(run_dir, manifest, split)
    source = f"{run_dir} ({split} split of {manifest or 'its manifest'})"
    if _needed(frame, by):
        frame = add_manifest_columns(frame, by, run_manifest_rows(run_dir, manifest, split),
                                     f"the {split} rows of {manifest or 'the run manifest'}")
    val_frame = None
    if split != "val" and manifest is None:
        val_frame = run_predictions(run_dir, None, "val")
    cohorts = {name: graph.cohort_text(name) for name in graph.names}
    report = evaluate_predictions(frame, graph.edges, threshold, val_frame, patient_how, n_boot, seed,
                                  cohorts, skip_unlabelled, source, by=by)
    report["notes"] = [scope_note(frame, source, split), scores_note(frame, run.calibration())] \
        + ([other] if other else []) + report["notes"][1:]
    out = out_dir or (run_dir if manifest is None and split == "test"
                      else os.path.join(run_dir, f"eval-{split}"))
    frame.attrs["display_names"] = display_names(tasks)  # figure titles (roc_plot and others)
    write_report(report, frame, out, f"Evaluation of {os.path.basename(os.path.abspath(run_dir))} "
                                     f"on the {split} split")
    report["out_dir"] = out
    return report


def evaluate_file(predictions: str, out_dir: str, edges=(), threshold: float = 0.5,
                  val_predictions: str | None = None, patient_how: str = "mean",
                  n_boot: int = 1000, seed: int = 0, cohorts: dict[str, str] | None = None,
                  skip_unlabelled: bool = False, by: list[str] | None = None,
                  manifest: str | None = None, split: str | None = None) -> dict:
    """Evaluate any prediction CSV (a CNN run's, the radiomics baseline's, an export's).

    ``cohorts`` (``{"alnm": "malignancy"}``) scores each child only where its parent's label
    is 1, as the paper scores ALNM within the malignant masses. A task without labels is an
    error unless ``skip_unlabelled``; nothing is written then.

    Args:
        predictions: the prediction CSV scored.
        out_dir: the report's folder.
        edges: ``(parent, child)`` pairs for the inconsistency rates.
        threshold: the probability threshold of ACC, SE, SP, precision and F1.
        val_predictions: validation predictions: the Youden threshold and the operating
            points are chosen on them (without, operating points are chosen on the scored
            file and marked optimistic).
        patient_how: a patient's score from its images, ``mean`` or ``max``.
        n_boot: bootstrap resamples of patients for the 95% CIs.
        seed: the bootstrap's seed.
        cohorts: ``{child: parent}``.
        skip_unlabelled: score only the tasks with labels instead of refusing.
        by: columns forming subgroups: from the prediction CSV, else from ``manifest``.
        manifest: a manifest CSV the ``by`` columns are read from, matched by ``image``.
        split: score only the rows whose ``split`` column is this (None: every row).

    Returns:
        The report, as :func:`evaluate_run`'s (``notes`` says what was scored).

    Raises:
        UsmtlError: a task without labels (unless ``skip_unlabelled``); a ``by`` column in
            neither file; a manifest whose images do not match (see
            :func:`merge_manifest_columns`). Nothing is written then.

    Example:
        >>> from usmtl.evaluation.evaluate import evaluate_file
        >>> report = evaluate_file("test_predictions.csv", "eval", by=["device"],
        ...                        manifest="manifest.csv")  # doctest: +SKIP
        >>> report["subgroups"]["device"]["malignancy"]["heterogeneity"]["p"]  # doctest: +SKIP
        0.41
    """
    cohorts = cohorts or {}
    everything = read_predictions(predictions)
    frame = restrict_to_cohorts(select_split(everything, split, predictions), cohorts)
    frame = merge_manifest_columns(frame, by, manifest, predictions)
    val_frame = read_predictions(val_predictions) if val_predictions else None
    if val_frame is not None:
        val_frame = restrict_to_cohorts(val_frame, cohorts)
    described = {child: f"{parent} = 1" for child, parent in cohorts.items()}
    report = evaluate_predictions(frame, edges, threshold, val_frame, patient_how, n_boot, seed,
                                  described, skip_unlabelled, predictions, by=by)
    report["notes"].insert(0, scope_note(frame, predictions, split, len(everything)))
    write_report(report, frame, out_dir, f"Evaluation of {os.path.basename(predictions)}")
    report["out_dir"] = out_dir
    return report


def compact_table(report: dict) -> str:
    from usmtl.evaluation.metrics import format_table

    rows = {}
    for task, entry in report["tasks"].items():
        rows[task] = {"cohort": entry.get("cohort", "as labelled"), "n": entry["n"],
                      "positives": entry["positives"],
                      **{m: entry["image"][m]["value"] for m in METRICS}}
    return format_table(rows)
