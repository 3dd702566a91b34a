"""A plain-words summary of a run's predictions, five lines, for a reader new to usmtl
(``make demo`` ends with it): what was trained, the parent's AUC, each child's AUC within
its cohort (a child without a positive or a negative case is named, not scored), and what
"hierarchy violations" are and why the hinge reduces them.

Run it as ``python -m usmtl.evaluation.summary RUN PREDICTIONS_CSV``.

Example:
    >>> from usmtl.evaluation.summary import summary_lines
    >>> lines = summary_lines(frame, cfg)  # doctest: +SKIP
    >>> len(lines)  # doctest: +SKIP
    5
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd

from usmtl.evaluation.metrics import binary_metrics
from usmtl.tasks import TaskGraph


def _cohort(task) -> str:
    if task.cohort in (None, "all"):
        return "images"
    if task.cohort == "parent_positive":
        return f"{task.parent}-positive images"
    return f"{task.cohort} images"


def _score(frame: pd.DataFrame, task) -> tuple[str, bool]:
    """``(words, estimable)`` for one task's AUC within its cohort."""
    if f"y_{task.name}" not in frame or f"p_{task.name}" not in frame:
        return f"{task.name}: no labels in these predictions", False
    y = frame[f"y_{task.name}"].to_numpy(float)
    known = ~np.isnan(y)
    positives, n = int(np.sum(y[known] == 1)), int(known.sum())
    if positives == 0 or positives == n:
        what = "no positive" if positives == 0 else "no negative"
        return f"{task.name}: not estimable ({what} case among its {n} {_cohort(task)})", False
    auc = binary_metrics(y, frame[f"p_{task.name}"].to_numpy(float))["auc"]
    return (f"{task.name} {auc:.2f} ({positives} positive of {n} {_cohort(task)})",
            not math.isnan(auc))


def summary_lines(frame: pd.DataFrame, cfg, split: str = "test") -> list[str]:
    """Five lines that explain a prediction frame of the run with config ``cfg``.

    Args:
        frame: a prediction frame (``usmtl predict``): ``p_<task>``, ``y_<task>`` within each
            task's cohort, ``hierarchy_violation``.
        cfg: the run's :class:`~usmtl.config.ExperimentConfig`.
        split: the name of the rows' split, for the words.

    Returns:
        The five lines, without newlines.
    """
    graph = TaskGraph.from_config(cfg.tasks)
    roots = [t for t in graph.tasks if t.parent is None]
    children = [t for t in graph.tasks if t.parent is not None]
    chain = ", ".join(f"{p} -> {c}" for p, c in graph.edges) or "no parent -> child edge"
    patients = frame["patient_id"].nunique() if "patient_id" in frame else len(frame)
    lines = [f"Trained: {cfg.name}, one {cfg.model.backbone} shared by {len(graph.tasks)} "
             f"sigmoid heads ({chain}) on {cfg.data.image_size}-px RoIs for "
             f"{cfg.train.epochs} epochs; scored on {len(frame)} {split} images of "
             f"{patients} patients."]
    lines.append("Parent: " + "; ".join(
        f"{_score(frame, t)[0]}, the chance that a malignant mass scores above a benign one"
        if t.label == "malignant" else _score(frame, t)[0] for t in roots) + ".")
    if children:
        scored = [_score(frame, t) for t in children]
        good = [words for words, ok in scored if ok]
        bad = [words for words, ok in scored if not ok]
        text = "Children, AUC within each child's cohort: " + ("; ".join(good) or "none")
        if bad:
            text += "; not scored: " + "; ".join(bad)
        lines.append(text + ".")
    else:
        lines.append("Children: none (a single-task model).")
    if "hierarchy_violation" in frame and graph.edges:
        count = int(frame["hierarchy_violation"].sum())
        lines.append(f"Hierarchy violations: {count} of {len(frame)} images have a child "
                     f"called positive (p >= 0.5) while its parent is called negative, e.g. "
                     f"metastasis in a mass called benign: a contradiction, since a child "
                     f"implies its parent.")
    else:
        lines.append("Hierarchy violations: none possible (no parent -> child edge).")
    if cfg.model.hinge and graph.edges:
        lines.append(f"The hierarchical hinge (m = {cfg.model.hinge_margin}, lambda = "
                     f"{cfg.model.hinge_weight}) penalised every child score above its "
                     f"parent's by more than m during training, which reduces such "
                     f"violations; train with --set model.hinge=false to compare.")
    else:
        lines.append("This run was trained without the hierarchical hinge, which penalises a "
                     "child score above its parent's and so reduces violations.")
    return lines


def main(argv=None) -> int:
    """``python -m usmtl.evaluation.summary RUN PREDICTIONS_CSV``: print the summary."""
    from usmtl.errors import UsmtlError
    from usmtl.run import Run

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m usmtl.evaluation.summary RUN PREDICTIONS_CSV", file=sys.stderr)
        return 2
    try:
        cfg = Run.open(argv[0]).config()
        frame = pd.read_csv(argv[1])
    except (UsmtlError, OSError, ValueError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    splits = frame["split"].dropna().unique() if "split" in frame else []
    print("\n".join(summary_lines(frame, cfg, splits[0] if len(splits) == 1 else "scored")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
