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

The rooms around it: which tasks have labels (:mod:`usmtl.evaluation.labels`), the ``--by``
columns (:mod:`usmtl.evaluation.by_columns`), a run's cached predictions
(:mod:`usmtl.evaluation.run_scores`), the report's tables (:mod:`usmtl.evaluation.tables`)
and its folder with ``report.md`` and the figures (:mod:`usmtl.evaluation.report`).

Example:
    >>> from usmtl.evaluation.evaluate import evaluate_run
    >>> report = evaluate_run("runs/quickstart", n_boot=200)  # doctest: +SKIP
    >>> report["tasks"]["malignancy"]["image"]["auc"]["value"]  # doctest: +SKIP
    0.97
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError
from usmtl.evaluation import stats
from usmtl.evaluation.by_columns import (add_manifest_columns, check_by_columns,
                                        merge_manifest_columns, needed_columns)
from usmtl.evaluation.labels import check_labels
from usmtl.evaluation.metrics import binary_metrics
from usmtl.evaluation.predictions import prediction_tasks, read_predictions, require_threshold
from usmtl.evaluation.report import write_report
from usmtl.evaluation.run_scores import run_manifest_rows, run_predictions
from usmtl.evaluation.scope import hierarchy_on_one_scale, scope_note, scores_note, select_split
# compact_table (usmtl evaluate's console table) is re-exported: the CLI reads it here.
from usmtl.evaluation.tables import compact_table  # noqa: F401
from usmtl.tasks import display_name, display_names

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


def _labels_and_scores(frame: pd.DataFrame, task: str):
    if f"y_{task}" not in frame:
        raise UsmtlError(f"Task {task!r} has no labels (y_{task}) in the predictions; "
                         f"evaluate needs a manifest with its label column")
    return frame[f"y_{task}"].to_numpy(float), frame[f"p_{task}"].to_numpy(float)


def evaluate_predictions(frame: pd.DataFrame, edges=(), threshold: float = 0.5,
                         val_frame: pd.DataFrame | None = None, patient_how: str = "mean",
                         n_boot: int = 1000, seed: int = 0,
                         cohorts: dict[str, str] | None = None, skip_unlabelled: bool = False,
                         source: str = "the predictions", by: list[str] | None = None,
                         targets=(0.90, 0.95), names: dict | None = None) -> dict:
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
    k, pooled_auc}}``. ``report["display_names"]`` holds each scored task's name in the
    tables and figures: ``names`` (the config's ``display_name``) or derived from the task name.

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
    report["display_names"] = {task: display_name(task, names)
                               for task in list(report["tasks"]) + list(skipped)}
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
    if needed_columns(frame, by):
        frame = add_manifest_columns(frame, by, run_manifest_rows(run_dir, manifest, split),
                                     f"the {split} rows of {manifest or 'the run manifest'}")
    val_frame = None
    if split != "val" and manifest is None:
        val_frame = run_predictions(run_dir, None, "val")
    cohorts = {name: graph.cohort_text(name) for name in graph.names}
    report = evaluate_predictions(frame, graph.edges, threshold, val_frame, patient_how, n_boot, seed,
                                  cohorts, skip_unlabelled, source, by=by,
                                  names=display_names(tasks))
    report["notes"] = [scope_note(frame, source, split), scores_note(frame, run.calibration())] \
        + ([other] if other else []) + report["notes"][1:]
    out = out_dir or (run_dir if manifest is None and split == "test"
                      else os.path.join(run_dir, f"eval-{split}"))
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


