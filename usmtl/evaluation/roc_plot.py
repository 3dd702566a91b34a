"""ROC figures for a paper: each task's curve with its 95% patient-bootstrap band, its AUC
and its n (images, positives), titled with the task's display name; one figure per task and
one with every task.

The band is pointwise: at each false-positive rate, the 2.5th and 97.5th percentiles of the
true-positive rate over resamples of patients (all images of a drawn patient come along, as
in :func:`usmtl.evaluation.stats.patient_bootstrap_ci`). Its resample count is the report's
(``usmtl evaluate --bootstrap N``), stated in the legend; with 0 no band is drawn.

Example:
    >>> from usmtl.evaluation.roc_plot import roc_band
    >>> import numpy as np
    >>> y = np.array([0, 0, 1, 1, 0, 1]); p = np.array([.1, .4, .35, .8, .2, .9])
    >>> grid, low, high = roc_band(y, p, np.arange(6), n_boot=50)
    >>> grid.shape == low.shape == high.shape and bool((low <= high).all())
    True
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from usmtl.evaluation.figures import save_figure
from usmtl.evaluation.metrics import binary_metrics
from usmtl.evaluation.predictions import prediction_tasks
from usmtl.tasks import display_name

GRID = np.linspace(0.0, 1.0, 101)


def roc_band(y, score, patient_ids, n_boot: int = 200, seed: int = 0, level: float = 0.95):
    """``(fpr grid, tpr low, tpr high)``: the pointwise patient-bootstrap band of the ROC.
    Resamples with one class only are skipped."""
    from sklearn.metrics import roc_curve

    codes, _ = pd.factorize(pd.Series(np.asarray(patient_ids)).astype(str))
    n_groups = codes.max() + 1 if len(codes) else 0
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, n_groups, n_groups), minlength=n_groups)
        weight = counts[codes].astype(float)
        drawn = weight > 0
        if len(np.unique(y[drawn])) < 2:
            continue
        fpr, tpr, _ = roc_curve(y[drawn], score[drawn], sample_weight=weight[drawn])
        curves.append(np.interp(GRID, fpr, tpr))
    if not curves:
        return GRID, np.full_like(GRID, np.nan), np.full_like(GRID, np.nan)
    curves = np.array(curves)
    tail = (1 - level) / 2 * 100
    return GRID, np.percentile(curves, tail, axis=0), np.percentile(curves, 100 - tail, axis=0)


def band_label(n_boot: int) -> str:
    """The band's legend entry, with its resample count; with none, that no band is drawn.

    Example:
        >>> band_label(1000), band_label(0)
        ('95% CI (1000 patient resamples)', 'no CI band (0 bootstrap resamples)')
    """
    return (f"95% CI ({n_boot} patient resamples)" if n_boot > 0
            else "no CI band (0 bootstrap resamples)")


def plot_rocs(frame: pd.DataFrame, out_dir: str, names: dict | None = None,
              n_boot: int = 200) -> list[str]:
    """One ROC figure per task with both classes (``roc_<task>.png``, plus the other
    formats of :func:`~usmtl.evaluation.figures.figure_settings`) and ``roc_all.png``;
    returns the PNG paths.

    Args:
        frame: predictions (``p_<task>``, ``y_<task>``, ``patient_id``).
        out_dir: the figures' folder.
        names: display names (default: ``frame.attrs["display_names"]``, else derived).
        n_boot: patient resamples of the band (``usmtl evaluate --bootstrap``, stated in
            the legend); 0 draws no band and the legend says so.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    names = names if names is not None else frame.attrs.get("display_names")
    patients = frame["patient_id"] if "patient_id" in frame else pd.Series(range(len(frame)))
    paths = []
    fig_all, ax_all = plt.subplots(figsize=(5, 5))
    for task in prediction_tasks(frame):
        if f"y_{task}" not in frame:
            continue
        y, p = frame[f"y_{task}"].to_numpy(float), frame[f"p_{task}"].to_numpy(float)
        known = ~np.isnan(y)
        if len(np.unique(y[known])) < 2:
            continue
        title = display_name(task, names)
        fpr, tpr, _ = roc_curve(y[known], p[known])
        auc = binary_metrics(y, p)["auc"]
        n, positives = int(known.sum()), int(np.sum(y[known] == 1))
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        if n_boot > 0:
            grid, low, high = roc_band(y[known], p[known], patients.to_numpy()[known], n_boot)
            ax.fill_between(grid, low, high, color="C0", alpha=0.2, linewidth=0,
                            label=band_label(n_boot))
        else:
            ax.plot([], [], " ", label=band_label(n_boot))  # a legend line without a mark
        ax.plot(fpr, tpr, color="C0", label=f"AUC {auc:.3f}")
        ax_all.plot(fpr, tpr, label=f"{title} (AUC {auc:.3f}, n={n})")
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01),
               title=f"{title}\nn = {n} images, {positives} positive")
        ax.legend(loc="lower right", fontsize=9)
        paths.append(save_figure(fig, os.path.join(out_dir, f"roc_{task}.png")))
    ax_all.plot([0, 1], [0, 1], ":", color="grey")
    ax_all.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC curves",
               xlim=(0, 1), ylim=(0, 1.01))
    ax_all.legend(loc="lower right", fontsize=8)
    return paths + [save_figure(fig_all, os.path.join(out_dir, "roc_all.png"))]
