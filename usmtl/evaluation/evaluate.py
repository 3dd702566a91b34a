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
from usmtl.evaluation.metrics import METRICS, binary_metrics
from usmtl.evaluation.predictions import prediction_tasks, read_predictions
from usmtl.evaluation import stats

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


def evaluate_predictions(frame: pd.DataFrame, edges=(), threshold: float = 0.5,
                         val_frame: pd.DataFrame | None = None, patient_how: str = "mean",
                         n_boot: int = 1000, seed: int = 0,
                         cohorts: dict[str, str] | None = None, skip_unlabelled: bool = False,
                         source: str = "the predictions") -> dict:
    """Metrics of a prediction frame; thresholds chosen on ``val_frame`` when given.

    ``cohorts`` maps a task to the description of its cohort, stated in the report beside
    its n (the labels are expected to be restricted to it already); others read "as
    labelled".

    Raises:
        UsmtlError: a task has no labels (no ``y_<task>`` column, or none known), naming it,
            unless ``skip_unlabelled`` (then it is left out and listed in the report's
            ``skipped_tasks``); or no task has labels at all. ``source`` names the frame in
            the message.
    """
    cohorts = cohorts or {}
    if len(frame) == 0:
        raise UsmtlError("No predictions to evaluate (empty frame)")
    skipped = check_labels(frame, skip_unlabelled, source)
    report = {"threshold": threshold, "patient_aggregation": patient_how, "n_images": len(frame),
              "n_patients": int(frame["patient_id"].nunique()), "bootstrap": n_boot, "tasks": {},
              "skipped_tasks": skipped}
    patients = frame["patient_id"].astype(str).to_numpy()
    for task in prediction_tasks(frame):
        if task in skipped:
            continue
        y, p = _labels_and_scores(frame, task)
        entry = {"image": stats.bootstrap_metrics(y, p, patients, threshold, n_boot, seed)}
        point = binary_metrics(y, p, threshold)
        entry["confusion"] = {k: point[k] for k in ("tp", "fp", "fn", "tn")}
        entry["n"], entry["positives"] = point["n"], point["positives"]
        entry["cohort"] = cohorts.get(task, "as labelled")
        py, pp, pids = stats.aggregate_patients(y, p, patients, how=patient_how)
        entry["patient"] = stats.bootstrap_metrics(py, pp, pids, threshold, n_boot, seed)
        if val_frame is not None and f"y_{task}" in val_frame:
            vy, vp = _labels_and_scores(val_frame, task)
            youden = stats.youden_threshold(vy, vp)
            entry["youden_threshold"] = youden
            if not math.isnan(youden):
                entry["image_youden"] = stats.bootstrap_metrics(y, p, patients, youden, n_boot, seed)
        report["tasks"][task] = entry
    report["inconsistency"] = stats.hierarchy_inconsistency(frame, list(edges), threshold)
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


def _fmt(v: dict) -> str:
    if v is None or math.isnan(v["value"]):
        return "-"
    if math.isnan(v["ci_low"]):
        return f"{v['value']:.3f}"
    return f"{v['value']:.3f} ({v['ci_low']:.3f}-{v['ci_high']:.3f})"


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
                     + " | ".join(_fmt(values[m]) for m in METRICS) + " |")
    return "\n".join(lines)


def markdown_report(report: dict, title: str) -> str:
    parts = [f"# {title}", "",
             f"{report['n_images']} images of {report['n_patients']} patients. Threshold "
             f"{report['threshold']}; 95% CIs from {report['bootstrap']} bootstrap resamples of "
             f"patients. Each task is scored within its cohort (n images with a known label).",
             "", "## Image level", "", markdown_table(report, "image"), "",
             f"## Patient level (score = {report['patient_aggregation']} of a patient's images)",
             "", markdown_table(report, "patient"), ""]
    if any("image_youden" in e for e in report["tasks"].values()):
        thresholds = ", ".join(f"{t}: {e['youden_threshold']:.3f}" for t, e in
                               report["tasks"].items() if "youden_threshold" in e)
        parts += ["## Image level at the Youden threshold chosen on validation", "",
                  f"Thresholds: {thresholds}", "", markdown_table(report, "image_youden"), ""]
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


def plot_rocs(frame: pd.DataFrame, out_dir: str) -> list[str]:
    """One ROC PNG per task and one with every task; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    paths = []
    fig_all, ax_all = plt.subplots(figsize=(5, 5))
    for task in prediction_tasks(frame):
        if f"y_{task}" not in frame:
            continue
        y, p = frame[f"y_{task}"].to_numpy(float), frame[f"p_{task}"].to_numpy(float)
        known = ~np.isnan(y)
        if len(np.unique(y[known])) < 2:
            continue
        fpr, tpr, _ = roc_curve(y[known], p[known])
        auc = binary_metrics(y, p)["auc"]
        fig, ax = plt.subplots(figsize=(4, 4))
        for axis in (ax, ax_all):
            axis.plot(fpr, tpr, label=f"{task} (AUC {auc:.3f})")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC: {task}")
        ax.legend(loc="lower right")
        fig.tight_layout()
        path = os.path.join(out_dir, f"roc_{task}.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    ax_all.plot([0, 1], [0, 1], ":", color="grey")
    ax_all.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC curves")
    ax_all.legend(loc="lower right", fontsize=8)
    fig_all.tight_layout()
    path = os.path.join(out_dir, "roc_all.png")
    fig_all.savefig(path, dpi=120)
    plt.close(fig_all)
    return paths + [path]


def write_report(report: dict, frame: pd.DataFrame, out_dir: str, title: str) -> None:
    from usmtl.run import write_csv_atomic, write_json_atomic, write_text_atomic

    os.makedirs(out_dir, exist_ok=True)
    write_json_atomic(os.path.join(out_dir, "metrics.json"), report)
    write_csv_atomic(os.path.join(out_dir, "metrics.csv"), metrics_rows(report))
    plot_rocs(frame, out_dir)
    write_text_atomic(os.path.join(out_dir, "report.md"), markdown_report(report, title))


def run_predictions(run_dir: str, manifest: str | None = None, split: str = "test") -> pd.DataFrame:
    """Predictions of a run on one split of its manifest (cached as ``<split>_predictions.csv``
    when the run's own manifest is used)."""
    from usmtl.run import Run, write_csv_atomic

    run = Run.open(run_dir)
    run_manifest = run.manifest_path
    own = manifest is None or os.path.abspath(manifest) == run_manifest
    cache = run.predictions_path(split)
    if own and os.path.isfile(cache):
        return read_predictions(cache)
    from usmtl.predict import predict

    frame = predict(run_dir, manifest or run_manifest, split=split)
    if own:
        write_csv_atomic(cache, frame)
    return frame


def evaluate_run(run_dir: str, manifest: str | None = None, split: str = "test",
                 threshold: float = 0.5, patient_how: str = "mean", n_boot: int = 1000,
                 seed: int = 0, skip_unlabelled: bool = False) -> dict:
    """Evaluate a run directory on a split; writes metrics.json, metrics.csv, report.md and
    ROC curves into it (into ``RUN/eval-<split>`` for another manifest).

    Args:
        run_dir: a finished run directory.
        manifest: another manifest (default: the run's own).
        split: the split scored; thresholds (Youden) come from ``val`` of the run's manifest.
        threshold: the probability threshold of ACC, SE, SP, precision and F1.
        patient_how: a patient's score from its images, ``mean`` or ``max``.
        n_boot: bootstrap resamples of patients for the 95% CIs.
        seed: the bootstrap's seed.
        skip_unlabelled: score only the tasks with labels instead of refusing.

    Returns:
        The report (``metrics.json``'s content): per task its cohort, n, positives, image-
        and patient-level metrics with CIs, Youden results; the inconsistency rates per edge;
        ``out_dir``.

    Raises:
        UsmtlError: not a run directory, or a task without labels (unless ``skip_unlabelled``).

    Example:
        >>> from usmtl.evaluation.evaluate import evaluate_run
        >>> report = evaluate_run("runs/paper-hl", n_boot=1000)  # doctest: +SKIP
        >>> report["tasks"]["alnm"]["cohort"], report["tasks"]["alnm"]["n"]  # doctest: +SKIP
        ('malignant = 1', 184)
    """
    from usmtl.run import Run
    from usmtl.tasks import TaskGraph

    graph = TaskGraph.from_config(Run.open(run_dir).config().tasks)
    frame = run_predictions(run_dir, manifest, split)
    val_frame = None
    if split != "val" and manifest is None:
        val_frame = run_predictions(run_dir, None, "val")
    cohorts = {name: graph.cohort_text(name) for name in graph.names}
    source = f"{run_dir} ({split} split of {manifest or 'its manifest'})"
    report = evaluate_predictions(frame, graph.edges, threshold, val_frame, patient_how, n_boot, seed,
                                  cohorts, skip_unlabelled, source)
    out = run_dir if manifest is None and split == "test" else os.path.join(run_dir, f"eval-{split}")
    write_report(report, frame, out, f"Evaluation of {os.path.basename(os.path.abspath(run_dir))} "
                                     f"on the {split} split")
    report["out_dir"] = out
    return report


def evaluate_file(predictions: str, out_dir: str, edges=(), threshold: float = 0.5,
                  val_predictions: str | None = None, patient_how: str = "mean",
                  n_boot: int = 1000, seed: int = 0, cohorts: dict[str, str] | None = None,
                  skip_unlabelled: bool = False) -> dict:
    """Evaluate any prediction CSV (a CNN run's, the radiomics baseline's, an export's).

    ``cohorts`` (``{"alnm": "malignancy"}``) scores each child only where its parent's label
    is 1, as the paper scores ALNM within the malignant masses. A task without labels is an
    error unless ``skip_unlabelled``; nothing is written then.
    """
    cohorts = cohorts or {}
    frame = restrict_to_cohorts(read_predictions(predictions), cohorts)
    val_frame = read_predictions(val_predictions) if val_predictions else None
    if val_frame is not None:
        val_frame = restrict_to_cohorts(val_frame, cohorts)
    described = {child: f"{parent} = 1" for child, parent in cohorts.items()}
    report = evaluate_predictions(frame, edges, threshold, val_frame, patient_how, n_boot, seed,
                                  described, skip_unlabelled, predictions)
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
