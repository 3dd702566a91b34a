"""The one rule of ``evaluate``, ``compare`` and ``validate`` for tasks without labels: a
task with predictions but no ``y_<task>`` column, or no known label in it, is an error naming
it, unless the caller skips it explicitly (``--skip-unlabelled``); none labelled is always an
error.

Example:
    >>> import pandas as pd
    >>> from usmtl.evaluation.labels import unlabelled_tasks
    >>> frame = pd.DataFrame({"p_malignancy": [0.2], "y_malignancy": [1.0], "p_alnm": [0.4]})
    >>> unlabelled_tasks(frame)
    {'alnm': 'no y_alnm column'}
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError
from usmtl.evaluation.predictions import prediction_tasks


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
