"""Ensembles and test-time augmentation: how several scores of one image become one.

Two rules combine the members' probabilities (and the TTA views' within a member):

- ``mean``: the mean of the probabilities (the default; what Lakshminarayanan et al. 2017
  call a deep ensemble);
- ``logit``: the sigmoid of the mean logit, which weighs a confident member more.

Test-time augmentation (``tta``): ``none`` or ``flip`` (the crop and its horizontal mirror,
combined by the same rule). A vertical flip is not offered: ultrasound has a top (the skin)
and a bottom (the chest wall), and the model never saw one upside down.

Example:
    >>> import numpy as np
    >>> from usmtl.evaluation.ensemble import combine
    >>> combine([np.array([0.2, 0.9]), np.array([0.4, 0.9])], "mean").round(3).tolist()
    [0.3, 0.9]
    >>> combine([np.array([0.5]), np.array([0.5])], "logit").tolist()
    [0.5]
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError

ENSEMBLE_RULES = ("mean", "logit")
TTA_CHOICES = ("none", "flip")
MEMBER_PREFIX = "member"  # member columns: member<k>_<task> (not p_, so not read as a task)


def member_column(k, task: str) -> str:
    """The predictions CSV's column of ensemble member ``k``'s score for ``task``."""
    return f"{MEMBER_PREFIX}{k}_{task}"


def check_rule(rule: str) -> str:
    if rule not in ENSEMBLE_RULES:
        raise UsmtlError(f"The ensemble rule must be one of {list(ENSEMBLE_RULES)}. "
                         f"Received: {rule!r}")
    return rule


def check_tta(tta: str | None) -> str:
    tta = tta or "none"
    if tta not in TTA_CHOICES:
        raise UsmtlError(f"--tta must be one of {list(TTA_CHOICES)}. Received: {tta!r}")
    return tta


def combine(scores, rule: str = "mean") -> np.ndarray:
    """One probability per image from several ``(n,)`` probability arrays, by ``rule``.

    Raises:
        UsmtlError: an unknown rule, no scores, or arrays of different lengths.
    """
    check_rule(rule)
    arrays = [np.asarray(s, float).ravel() for s in scores]
    if not arrays or len({len(a) for a in arrays}) != 1:
        raise UsmtlError(f"An ensemble needs one or more score arrays of one length. "
                         f"Received lengths: {[len(a) for a in arrays]}")
    stack = np.stack(arrays)
    if rule == "mean":
        return stack.mean(axis=0)
    clipped = np.clip(stack, 1e-7, 1 - 1e-7)  # a saturated sigmoid has an infinite logit
    logits = np.log(clipped) - np.log1p(-clipped)
    return 1.0 / (1.0 + np.exp(-logits.mean(axis=0)))


def predict_with_tta(runtime, crops, batch_size: int = 32, tta: str | None = "none",
                     rule: str = "mean") -> dict:
    """``{task: probabilities}`` of a runtime (:func:`usmtl.formats.open_model`) on
    :class:`~usmtl.data.crops.Crops`, with the views ``tta`` names combined by ``rule``."""
    plain = runtime.predict_crops(crops, batch_size)
    if check_tta(tta) == "none":
        return plain
    flipped = runtime.predict_crops(crops.flipped(), batch_size)
    return {task: combine([plain[task], flipped[task]], rule) for task in plain}


def ensemble_frame(frames, rule: str = "mean", names=None, edges=()) -> pd.DataFrame:
    """The members' prediction frames (same images, same order) as one: ``p_<task>`` the
    combined score, ``member<k>_<task>`` each member's, labels and ids from the first, and
    the hierarchy-violation columns recomputed on the combined scores along ``edges``.

    Raises:
        UsmtlError: no frames, or frames that differ in their images or tasks.
    """
    from usmtl.evaluation.predictions import prediction_tasks, violations

    frames = list(frames)
    if not frames:
        raise UsmtlError("An ensemble needs at least one member. Received: none")
    first = frames[0]
    tasks = prediction_tasks(first)
    names = names or [str(k) for k in range(1, len(frames) + 1)]
    for name, frame in zip(names, frames):
        if list(frame["image"]) != list(first["image"]) or prediction_tasks(frame) != tasks:
            raise UsmtlError(f"Ensemble member {name} predicted other images or tasks than "
                             f"member {names[0]}. Received: {len(frame)} rows, tasks "
                             f"{prediction_tasks(frame)} against {len(first)}, {tasks}")
    out = first.copy()
    for task in tasks:
        out[f"p_{task}"] = combine([f[f"p_{task}"] for f in frames], rule)
        for name, frame in zip(names, frames):
            out[member_column(name, task)] = frame[f"p_{task}"].to_numpy()
    if "hierarchy_violation" in out:
        flags, which, excess = violations({t: out[f"p_{t}"].to_numpy() for t in tasks}, edges)
        out["hierarchy_violation"], out["violated_edges"] = flags.astype(int), which
        out["hierarchy_excess"] = excess
    return out
