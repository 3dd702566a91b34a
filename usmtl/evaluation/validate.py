"""``usmtl validate``: external validation in one command.

A run is scored on an external manifest with everything taken from its INTERNAL data: the
recalibration of ``usmtl calibrate`` (when the run has one), the Youden threshold and the
operating points chosen on the run's validation split. The external set is evaluated whole (an
external set has no split of the run's); the report states it, and warns when external
patients share ids with the run's own split (the same patients, or an id clash to check).

Writes into ``OUT``: ``validation.md`` (internal test against external, side by side, with the
change of every figure), ``validation.csv`` (the same, long), ``validation.json``,
``reliability_<task>.png`` (both reliability curves on one plot), and the two full
evaluation reports in ``internal/`` and ``external/`` (:mod:`usmtl.evaluation.evaluate`).

Example:
    >>> from usmtl.evaluation.validate import validate
    >>> result = validate("runs/busbra", "external/manifest.csv", "runs/busbra/external")  # doctest: +SKIP
    >>> result["rows"][0]  # doctest: +SKIP
    {'task': 'malignancy', 'figure': 'AUC', 'internal': 0.891, 'external': 0.895, ...}
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError
from usmtl.evaluation.figures import save_figure


def _cell(value: dict | None) -> tuple[float, float, float]:
    if not value:
        return math.nan, math.nan, math.nan
    return value["value"], value.get("ci_low", math.nan), value.get("ci_high", math.nan)


def _figures(entry: dict) -> dict[str, dict]:
    """The figures compared, by name, from one task's evaluation entry."""
    figures = {"AUC": entry["image"]["auc"],
               "sensitivity at 0.5": entry["image"]["sensitivity"],
               "specificity at 0.5": entry["image"]["specificity"]}
    if "image_youden" in entry:
        figures["sensitivity at Youden (val)"] = entry["image_youden"]["sensitivity"]
        figures["specificity at Youden (val)"] = entry["image_youden"]["specificity"]
    names = {"brier": "Brier score", "ece": "ECE", "intercept": "calibration intercept",
             "slope": "calibration slope"}
    for key, name in names.items():
        if key in entry.get("calibration", {}):
            figures[name] = entry["calibration"][key]
    for point in entry.get("operating_points", []):
        for measure in ("sensitivity", "specificity"):
            if measure in point:
                figures[f"{measure} at {point['rule']} (t={point['threshold']:.3f})"] = point[measure]
    return figures


def _refuse_unlabelled_early(graph, external: str, skip_unlabelled: bool) -> None:
    """The external tasks without a known label (in their cohort), refused as
    :func:`~usmtl.evaluation.labels.refuse_unlabelled` would after the predictions."""
    import numpy as np

    from usmtl.data.manifest import read_manifest
    from usmtl.evaluation.labels import refuse_unlabelled
    from usmtl.tasks import TaskGraph, label_table

    manifest = read_manifest(external)
    present = graph.present(manifest.frame.columns).tasks
    labels = label_table(manifest, TaskGraph(present)) if present else {}
    missing = {name: ("no label column" if name not in labels else
                      "no known label in its cohort") for name in graph.names
               if name not in labels or np.isnan(labels[name]).all()}
    refuse_unlabelled(missing, graph.names, skip_unlabelled, ("compared", "compare"),
                      f"{external} has no known label for any task of the run",
                      f"have no labels in {external}", f" Received: {external}")


def side_by_side(internal: dict, external: dict) -> pd.DataFrame:
    """Long table: task, figure, internal (value, CI), external (value, CI), change."""
    rows = []
    for task, entry in internal["tasks"].items():
        if task not in external["tasks"]:
            continue
        other = external["tasks"][task]
        rows.append({"task": task, "figure": "n (positives)",
                     "internal": entry["n"], "external": other["n"],
                     "internal_positives": entry["positives"], "external_positives": other["positives"]})
        theirs = _figures(other)
        for name, value in _figures(entry).items():
            a, a_low, a_high = _cell(value)
            b, b_low, b_high = _cell(theirs.get(name))
            rows.append({"task": task, "figure": name, "internal": a, "internal_ci_low": a_low,
                         "internal_ci_high": a_high, "external": b, "external_ci_low": b_low,
                         "external_ci_high": b_high, "change": b - a})
    return pd.DataFrame(rows)


def _side(row, side: str) -> str:
    from usmtl.evaluation.cells import format_interval

    return format_interval({"value": row[side], "ci_low": row[f"{side}_ci_low"],
                            "ci_high": row[f"{side}_ci_high"]})


def markdown(table: pd.DataFrame, run_dir: str, external: str, notes: list[str],
             names: dict | None = None) -> str:
    """validation.md: per task (by its display name, ``names`` as
    :func:`usmtl.tasks.display_name` takes them) the internal and external figures."""
    from usmtl.tasks import display_name

    parts = [f"# External validation of {os.path.basename(os.path.abspath(run_dir))}", "",
             f"Internal: the run's test split. External: every row of {external}.", ""]
    parts += [f"- {note}" for note in notes] + [""]
    for task, rows in table.groupby("task", sort=False):
        parts += [f"## {display_name(task, names)}", "", "| figure | internal test | external | change |",
                  "|---|---|---|---|"]
        for _, r in rows.iterrows():
            if r["figure"] == "n (positives)":
                parts.append(f"| n (positives) | {int(r['internal'])} ({int(r['internal_positives'])}) "
                             f"| {int(r['external'])} ({int(r['external_positives'])}) | |")
                continue
            change = "-" if math.isnan(r["change"]) else f"{r['change']:+.3f}"
            parts.append(f"| {r['figure']} | {_side(r, 'internal')} | {_side(r, 'external')} | "
                         f"{change} |")
        parts += ["", f"![Reliability, internal against external](reliability_{task}.png)", ""]
    return "\n".join(parts)


def plot_reliability_pair(frames: dict[str, pd.DataFrame], task: str, path: str) -> None:
    """Both reliability curves of ``task`` on one plot, each with its n, and below it (on
    the same score axis) each source's histogram of scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from usmtl.evaluation.calibration import reliability_curve
    from usmtl.tasks import display_name

    fig, (ax, below) = plt.subplots(2, 1, sharex=True, figsize=(4.5, 5.5),
                                    gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect")
    for i, (name, frame) in enumerate(frames.items()):
        y, p = frame[f"y_{task}"].to_numpy(float), frame[f"p_{task}"].to_numpy(float)
        curve = reliability_curve(y, p)
        curve = curve[curve["count"] > 0]
        ax.plot(curve["mean_score"], curve["observed"], "-o", label=f"{name} (n = {len(y)})",
                markersize=3, color=f"C{i}")
        below.hist(p, bins=np.linspace(0, 1, 11), histtype="step", color=f"C{i}")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed rate",
           title=f"Reliability: {display_name(task, next(iter(frames.values())).attrs.get('display_names'))}")
    ax.legend(loc="upper left", fontsize=8)
    below.set(xlabel="predicted probability", ylabel="images")
    save_figure(fig, path)


def _shared_patients(run, external: pd.DataFrame) -> list[str]:
    """Notes on external patients whose ids are in the run's own split."""
    known = run.split()
    shared = pd.Series([known[p] for p in external["patient_id"].astype(str) if p in known])
    if shared.empty:
        return []
    counts = ", ".join(f"{n} {s}" for s, n in shared.value_counts().items())
    return [f"WARNING: {shared.size} external image(s) have patient ids of the run's own split "
            f"({counts}): the same patients (not external), or an id clash to check."]


def validate(run_dir: str, external: str, out_dir: str, threshold: float = 0.5,
             n_boot: int = 1000, seed: int = 0, skip_unlabelled: bool = False) -> dict:
    """Score ``run_dir`` on its internal test split and on the ``external`` manifest, with
    the thresholds and calibration of its internal validation, side by side.

    Args:
        run_dir: a finished run directory.
        external: a manifest of the external set (its labels name the run's tasks).
        out_dir: where the report goes (created).
        threshold: the fixed probability threshold of the "at 0.5" figures.
        n_boot: patient-bootstrap resamples of every CI.
        seed: the bootstrap's seed.
        skip_unlabelled: compare only the tasks the external set has labels for (else a task
            without labels there is an error naming it).

    Returns:
        ``{"internal": report, "external": report, "rows": [...], "notes": [...],
        "out_dir": out_dir}``.

    Raises:
        UsmtlError: not a run; a bad external manifest (every problem by line); an external
            task without labels (unless ``skip_unlabelled``).
    """
    from usmtl.evaluation.calibration_maps import describe
    from usmtl.evaluation.evaluate import evaluate_predictions
    from usmtl.evaluation.report import write_report
    from usmtl.evaluation.run_scores import run_predictions
    from usmtl.predict import predict
    from usmtl.run import Run, write_csv_atomic, write_json_atomic, write_text_atomic
    from usmtl.evaluation.tables import with_display_names
    from usmtl.tasks import TaskGraph, display_names

    run = Run.open(run_dir)
    graph = TaskGraph.from_config(run.config().tasks)
    names = display_names(run.config().tasks)
    cohorts = {name: graph.cohort_text(name) for name in graph.names}
    _refuse_unlabelled_early(graph, external, skip_unlabelled)  # before minutes of predicting
    val = run_predictions(run_dir, None, "val")
    frames = {"internal test": run_predictions(run_dir, None, "test"),
              "external": predict(run_dir, external)}
    reports = {}
    for name, frame in frames.items():
        source = f"{external} (external)" if name == "external" else f"{run_dir} (test split)"
        reports[name] = evaluate_predictions(frame, graph.edges, threshold, val, "mean", n_boot,
                                             seed, cohorts, skip_unlabelled, source, names=names)
        frame.attrs["display_names"] = names  # figure titles
    os.makedirs(out_dir, exist_ok=True)
    notes = [f"External rows: all {len(frames['external'])} rows of the manifest "
             f"({frames['external']['patient_id'].nunique()} patients) are evaluated: an external "
             f"set has no split of the run's.",
             f"Scores: {describe(run.calibration())}.",
             "Thresholds (Youden, operating points) are chosen on the run's internal validation "
             "split and applied unchanged to both sets."]
    notes += _shared_patients(run, frames["external"])
    if reports["external"].get("skipped_tasks"):
        notes.append("Not compared (no external labels): "
                     + ", ".join(reports["external"]["skipped_tasks"]))
    for name, folder in (("internal test", "internal"), ("external", "external")):
        write_report(reports[name], frames[name], os.path.join(out_dir, folder),
                     f"{name.capitalize()} evaluation of {os.path.basename(os.path.abspath(run_dir))}")
    table = side_by_side(reports["internal test"], reports["external"])
    if table.empty:
        raise UsmtlError(f"No task of {run_dir} has labels in both its test split and {external}. "
                         f"Received tasks: {graph.names}")
    for task in table["task"].unique():
        plot_reliability_pair({n: f[f[f"y_{task}"].notna()] for n, f in frames.items()}, task,
                              os.path.join(out_dir, f"reliability_{task}.png"))
    write_csv_atomic(os.path.join(out_dir, "validation.csv"), with_display_names(table, names))
    write_text_atomic(os.path.join(out_dir, "validation.md"),
                      markdown(table, run_dir, external, notes, names))
    result = {"internal": reports["internal test"], "external": reports["external"],
              "rows": table.to_dict("records"), "notes": notes, "out_dir": out_dir}
    write_json_atomic(os.path.join(out_dir, "validation.json"),
                      {k: v for k, v in result.items() if k != "out_dir"})
    return result
