"""``usmtl compare A B``: two models on the same images, with paired tests.

Per task: the AUC difference with a paired DeLong test (DeLong et al., Biometrics 1988) and
its 95% CI, and accuracy at the threshold with McNemar's test (McNemar, Psychometrika 1947).
A and B are run directories (their test-split predictions) or prediction CSVs. Each task is
compared on the images labelled in both (a run's labels are restricted to the task's
cohort: ALNM within the malignant masses), and the result states the cohort and n.

A shared task with no known label in either file cannot be compared: it is an error naming
it (``skip_unlabelled=True`` leaves it out instead), and two files that share no labelled
task are always an error, never an empty table.

Example:
    >>> from usmtl.evaluation.compare import compare
    >>> result = compare("runs/multitask-hl", "radiomics/test_predictions.csv")  # doctest: +SKIP
    >>> result["malignancy"]["delong"]["p"]  # doctest: +SKIP
    0.03
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError
from usmtl.evaluation import stats
from usmtl.evaluation.cells import cell
from usmtl.evaluation.labels import refuse_unlabelled
from usmtl.evaluation.predictions import prediction_tasks, read_predictions, require_threshold


def load_predictions(source: str, split: str = "test") -> pd.DataFrame:
    """A prediction frame from a run directory (its ``split`` predictions) or a CSV file."""
    if os.path.isdir(source):
        from usmtl.evaluation.run_scores import run_predictions

        return run_predictions(source, None, split)
    return read_predictions(source)


def align(a: pd.DataFrame, b: pd.DataFrame, names=("A", "B")) -> pd.DataFrame:
    """Join two prediction frames on image; an error when they cover different images.

    An image listed several times (one row per lesion, as the BUSI importer writes) is
    matched by its order among its own rows: the n-th row of an image in A with the n-th in
    B, as two predictions of one manifest list them."""
    a, b = (f.assign(_nth=f.groupby("image").cumcount()) for f in (a, b))
    keys_a, keys_b = (set(zip(f["image"], f["_nth"])) for f in (a, b))
    only_a, only_b = sorted(keys_a - keys_b), sorted(keys_b - keys_a)
    if only_a or only_b:
        raise UsmtlError(
            f"{names[0]} and {names[1]} do not cover the same images (rows): {len(only_a)} only "
            f"in {names[0]}, {len(only_b)} only in {names[1]}. Received: e.g. "
            f"{[f'{image} (its row {n + 1})' for image, n in (only_a + only_b)[:3]]}")
    return a.merge(b, on=["image", "_nth"], suffixes=("_a", "_b")).drop(columns="_nth")


def run_cohorts(source: str) -> dict[str, str]:
    """``{task: cohort text}`` of a run directory's config; ``{}`` for a prediction file."""
    from usmtl.run import Run
    from usmtl.tasks import TaskGraph

    run = Run(source)
    if not os.path.isdir(source) or not os.path.isfile(run.config_path):
        return {}
    graph = TaskGraph.from_config(run.config().tasks)
    return {name: graph.cohort_text(name) for name in graph.names}


def _shared_labels(joined: pd.DataFrame, task: str):
    """Labels known in both frames (either one's where only one has the column: the join
    then keeps its plain name ``y_<task>``, without a suffix)."""
    columns = [c for c in (f"y_{task}_a", f"y_{task}_b", f"y_{task}") if c in joined]
    if not columns:
        return None
    values = [joined[c].to_numpy(float) for c in columns]
    y = values[0].copy()
    for other in values[1:]:
        y[np.isnan(other)] = np.nan
    return y


def unlabelled_shared_tasks(joined: pd.DataFrame, tasks, names=("A", "B")) -> dict[str, str]:
    """``{task: why}`` for the ``tasks`` of an :func:`align`-ed frame without a known label."""
    missing = {}
    for task in tasks:
        y = _shared_labels(joined, task)
        if y is None:
            missing[task] = f"y_{task} in neither {names[0]} nor {names[1]}"
        elif not np.isfinite(y).any():
            missing[task] = (f"no image has a known y_{task}"
                             + (" in both" if f"y_{task}_a" in joined and f"y_{task}_b" in joined
                                else ""))
    return missing


def compare_frames(a: pd.DataFrame, b: pd.DataFrame, threshold: float = 0.5,
                   names=("A", "B"), cohorts: dict[str, str] | None = None,
                   skip_unlabelled: bool = False) -> dict:
    """Per common task: DeLong on AUC and McNemar on accuracy, paired over the images
    labelled in both; ``cohorts`` (``{task: text}``) is stated beside each task's n.

    Raises:
        UsmtlError: a shared task has no known label in either frame, naming it (unless
            ``skip_unlabelled``: it is left out), or no shared task has labels.
    """
    require_threshold(threshold)
    from usmtl.evaluation.scope import calibration_state

    cohorts = cohorts or {}
    scores = (calibration_state(a), calibration_state(b))
    joined = align(a, b, names)
    tasks = [t for t in prediction_tasks(a) if t in prediction_tasks(b)]
    if not tasks:
        raise UsmtlError(f"{names[0]} and {names[1]} share no task. Received: "
                         f"{prediction_tasks(a)} and {prediction_tasks(b)}")
    missing = unlabelled_shared_tasks(joined, tasks, names)
    refuse_unlabelled(missing, tasks, skip_unlabelled, ("compared", "compare"),
                      nothing=f"{names[0]} and {names[1]} share no labelled task, so nothing "
                              f"can be compared",
                      which=f"have no labels in {names[0]} or {names[1]}")
    result = {}
    for task in tasks:
        if task in missing:
            continue
        y = _shared_labels(joined, task)
        pa, pb = joined[f"p_{task}_a"].to_numpy(float), joined[f"p_{task}_b"].to_numpy(float)
        known = ~np.isnan(y)
        result[task] = {
            "cohort": cohorts.get(task, "as labelled"),
            "n": int(known.sum()),
            "delong": stats.delong_test(y, pa, pb),
            "mcnemar": stats.mcnemar_test(y[known], pa[known] >= threshold, pb[known] >= threshold),
            "scores": {"a": scores[0][task], "b": scores[1][task]},
        }
    return result


def compare(a: str, b: str, threshold: float = 0.5, split: str = "test",
            skip_unlabelled: bool = False) -> dict:
    """Two models on the same images: per task the paired DeLong test on AUC (with the
    difference's 95% CI) and McNemar's test on accuracy at ``threshold``.

    Args:
        a, b: run directories (their ``split`` predictions) or prediction CSVs; they must
            cover the same images.
        threshold: for accuracy and McNemar.
        split: the split read from run directories.
        skip_unlabelled: compare only the shared tasks with labels instead of refusing.

    Returns:
        ``{task: {"cohort", "n", "delong": {...}, "mcnemar": {...}, "scores": {"a", "b"}}}``
        over the images labelled in both; ``scores`` is ``calibrated`` or ``raw`` (a run's
        ``usmtl calibrate``), and :func:`format_comparison` warns where they differ.

    Raises:
        UsmtlError: different images, no shared task, or a shared task without labels
            (unless ``skip_unlabelled``).

    Example:
        >>> from usmtl.evaluation.compare import compare
        >>> result = compare("runs/paper-hl", "runs/radiomics")  # doctest: +SKIP
        >>> result["malignancy"]["delong"]["p"]  # doctest: +SKIP
    """
    cohorts = {**run_cohorts(b), **run_cohorts(a)}
    return compare_frames(load_predictions(a, split), load_predictions(b, split), threshold,
                          names=(a, b), cohorts=cohorts, skip_unlabelled=skip_unlabelled)


def format_comparison(result: dict, names=("A", "B")) -> str:
    lines = [f"| task | cohort | n | AUC {names[0]} | AUC {names[1]} | diff (95% CI) | DeLong p | "
             f"ACC {names[0]} | ACC {names[1]} | McNemar p |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for task, r in result.items():
        d, m = r["delong"], r["mcnemar"]
        diff = (f"{cell(d['diff'], '+.3f')} ({cell(d['ci_low'], '+.3f')} to "
                f"{cell(d['ci_high'], '+.3f')})" if cell(d['diff']) != "-" else "-")
        lines.append(f"| {task} | {r.get('cohort', 'as labelled')} | {r['n']} | "
                     f"{cell(d['auc_a'])} | {cell(d['auc_b'])} | {diff} | {cell(d['p'], '.3g')} | "
                     f"{cell(m['acc_a'])} | {cell(m['acc_b'])} | {cell(m['p'], '.3g')} |")
    return "\n".join(lines + calibration_lines(result, names))


def calibration_lines(result: dict, names=("A", "B")) -> list[str]:
    """The scores each side's figures are of, and a warning for each task compared with
    calibrated scores on one side and raw on the other."""
    lines = []
    for key, name in (("a", names[0]), ("b", names[1])):
        calibrated = [t for t, r in result.items() if r.get("scores", {}).get(key) == "calibrated"]
        lines.append(f"Scores of {name}: " + (f"calibrated for {', '.join(calibrated)}, raw for "
                                              f"the rest" if calibrated else "raw"))
    for task, r in result.items():
        a, b = r.get("scores", {}).get("a"), r.get("scores", {}).get("b")
        if a != b:
            lines.append(f"WARNING: {task}: {names[0]} is {a} and {names[1]} is {b}. DeLong's AUC "
                         f"difference is unaffected (a recalibration is monotone), but the "
                         f"accuracies and McNemar's test put a recalibrated and a raw score at "
                         f"the same threshold. Calibrate both runs, or neither ('usmtl calibrate "
                         f"RUN --remove').")
    return lines
