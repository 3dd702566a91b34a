"""Does the model work equally well for every group of patients or images? Per-group AUC,
sensitivity and specificity with patient-bootstrap CIs, a test of heterogeneity between the
groups' AUCs, and a forest plot.

The groups come from a column (``usmtl evaluate --by device``): scanner, centre, age band,
BI-RADS category, lesion size. Rows whose value is missing (NaN or an empty cell) form the
group ``"(missing)"``. Labels are floats, 1, 0 or NaN (unknown: outside the task's cohort,
dropped); a group needs both classes for an AUC, and a group without one is kept in the
table, named as not testable.

Heterogeneity is Cochran's Q over the testable groups' AUCs with inverse-variance weights
(DeLong variances, :func:`usmtl.evaluation.stats.delong_auc_variance`), referred to chi-square
with k - 1 degrees of freedom, and I² = max(0, (Q - df) / Q) (Cochran, Biometrics 10:101-129,
1954; Higgins & Thompson, Statistics in Medicine 21:1539-1558, 2002). Q assumes the groups'
AUCs are independent: true when the groups are sets of patients (centre, age), only
approximately when one patient's images fall in several groups (an image-level column).

Example:
    >>> from usmtl.evaluation.subgroups import heterogeneity_test
    >>> r = heterogeneity_test([0.90, 0.70], [0.0004, 0.0012])
    >>> round(r["q"], 2), r["df"], round(r["p"], 5), round(r["i2"], 3)
    (25.0, 1, 0.0, 0.96)
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError
from usmtl.evaluation.figures import save_figure

#: The group of rows whose ``by`` value is missing (NaN, None or an empty cell).
MISSING = "(missing)"

#: The first row of a :func:`subgroup_metrics` table: every row of the task together.
OVERALL = "(all)"

#: Metrics of the subgroup table that get a patient-bootstrap CI.
SUBGROUP_METRICS = ("auc", "sensitivity", "specificity")


def _is_missing(value) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return value.strip() == ""
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _label(value) -> str:
    """A group's name: 4.0 read from a CSV with gaps is group "4", as written."""
    if _is_missing(value):
        return MISSING
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _sort_key(label: str):
    if label == MISSING:
        return (2, 0.0, label)
    try:
        return (0, float(label), label)  # numeric groups in numeric order (2 before 10)
    except ValueError:
        return (1, 0.0, label)


def group_labels(values) -> np.ndarray:
    """Each row's group name (``"(missing)"`` for NaN, None or an empty cell).

    Example:
        >>> group_labels(["GE", "", None, 4.0, "GE"]).tolist()
        ['GE', '(missing)', '(missing)', '4', 'GE']
    """
    return np.array([_label(v) for v in values], dtype=object)


def _row(kind: str, group: str, y, p, patients, threshold: float, n_boot: int, seed: int,
         level: float) -> dict:
    from usmtl.evaluation import stats

    known = ~np.isnan(y) & ~np.isnan(p)
    y, p, patients = y[known], p[known], patients[known]
    n, positives = int(len(y)), int(np.sum(y == 1))
    row = {"kind": kind, "group": group, "n": n, "positives": positives,
           "n_patients": int(len(np.unique(patients)))}
    if n == 0:
        boot = {m: {"value": math.nan, "ci_low": math.nan, "ci_high": math.nan}
                for m in SUBGROUP_METRICS}
        auc, var = math.nan, math.nan
    else:
        boot = stats.bootstrap_metrics(y, p, patients, threshold, n_boot, seed, level)
        auc, var = stats.delong_auc_variance(y, p)
    for m in SUBGROUP_METRICS:
        row[m], row[f"{m}_ci_low"], row[f"{m}_ci_high"] = (boot[m]["value"], boot[m]["ci_low"],
                                                           boot[m]["ci_high"])
    row["auc"] = auc
    row["auc_var"] = var
    if n == 0:
        note = "not testable: no labelled images"
    elif positives == 0 or positives == n:
        note = "not testable: one class only"
    elif not np.isfinite(var):
        note = "not testable: fewer than 2 images of a class (no AUC variance)"
    elif var <= 0:
        # a zero DeLong variance (AUC 0 or 1) would get an infinite weight in Q
        note = "not testable: AUC of 0 or 1 (zero variance)"
    else:
        note = ""
    row["testable"] = note == ""
    row["note"] = note
    return row


def subgroup_metrics(frame: pd.DataFrame, task: str, by_values, threshold: float = 0.5,
                     n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """AUC, sensitivity and specificity of ``task`` in each group of ``by_values``, with
    patient-bootstrap CIs and the AUC's DeLong variance.

    Args:
        frame: a prediction frame with ``p_<task>``, ``y_<task>`` and ``patient_id``.
        task: the task scored.
        by_values: the group of each row of ``frame`` (same length), or the name of a
            column of ``frame``. Missing values form the group ``"(missing)"``.
        threshold: the probability threshold of sensitivity and specificity.
        n_boot: bootstrap resamples of patients, within each group (0: no CIs).
        seed: the bootstrap's seed.
        level: coverage of the CIs.

    Returns:
        One row for all the task's rows (``kind`` "overall", ``group`` "(all)"), then one
        per group (``kind`` "group"), numbers in numeric order, missing last: ``n``
        (labelled images), ``positives``, ``n_patients``, ``auc``, ``auc_ci_low``,
        ``auc_ci_high``, ``sensitivity``, ``specificity`` (each with ``_ci_low`` and
        ``_ci_high``), ``auc_var`` (DeLong), ``testable`` and ``note`` (why a group is not
        testable: no labelled images, one class only, fewer than 2 images of a class, or an
        AUC of 0 or 1, whose DeLong variance is 0). A group whose
        rows all have unknown labels is kept with n = 0.

    Raises:
        UsmtlError: the task has no ``p_``/``y_`` column, ``by_values`` names no column or
            has the wrong length.

    Example:
        >>> import pandas as pd
        >>> f = pd.DataFrame({"patient_id": list("abcdefgh"), "p_m": [.9, .2, .8, .4, .7, .6, .3, .1],
        ...                   "y_m": [1, 0, 1, 0, 1, 0, 1, 0], "site": list("AAAABBBC")})
        >>> t = subgroup_metrics(f, "m", "site", n_boot=0)
        >>> t[["group", "n", "auc", "testable"]].values.tolist()
        [['(all)', 8, 0.875, True], ['A', 4, 1.0, False], ['B', 3, 0.5, False], ['C', 1, nan, False]]
        >>> t["note"].iloc[3]
        'not testable: one class only'
    """
    for column in (f"p_{task}", f"y_{task}", "patient_id"):
        if column not in frame:
            raise UsmtlError(f"Subgroups of {task!r} need the column {column}. Received columns: "
                             f"{list(frame.columns)}")
    if isinstance(by_values, str):
        if by_values not in frame:
            raise UsmtlError(f"No column {by_values!r} to form subgroups. Received columns: "
                             f"{list(frame.columns)}")
        by_values = frame[by_values].to_numpy()
    labels = group_labels(by_values)
    if len(labels) != len(frame):
        raise UsmtlError(f"Subgroup values need one per prediction row ({len(frame)}). "
                         f"Received: {len(labels)}")
    y = frame[f"y_{task}"].to_numpy(float)
    p = frame[f"p_{task}"].to_numpy(float)
    patients = frame["patient_id"].astype(str).to_numpy()
    rows = [_row("overall", OVERALL, y, p, patients, threshold, n_boot, seed, level)]
    for group in sorted(set(labels), key=_sort_key):
        inside = labels == group
        rows.append(_row("group", group, y[inside], p[inside], patients[inside], threshold,
                         n_boot, seed, level))
    return pd.DataFrame(rows)


def heterogeneity_test(aucs, variances) -> dict:
    """Cochran's Q test of whether independent groups share one AUC: with weights w = 1/var
    and the pooled AUC = sum(w * auc) / sum(w), Q = sum(w * (auc - pooled)^2), on k - 1
    degrees of freedom (chi-square); I² = max(0, (Q - df) / Q), the share of the spread
    beyond chance (Higgins & Thompson 2002). For two groups Q is the square of the z of
    their difference, (auc1 - auc2) / sqrt(var1 + var2).

    Args:
        aucs: each group's AUC.
        variances: each group's AUC variance (DeLong). Groups with a NaN AUC or a variance
            that is NaN or not positive are left out.

    Returns:
        ``{"q", "df", "p", "i2", "k", "pooled_auc"}`` over the k groups kept; ``q``, ``p``,
        ``i2`` and ``pooled_auc`` are NaN with fewer than 2 groups (df then 0).

    Raises:
        UsmtlError: ``aucs`` and ``variances`` differ in length.

    Example:
        >>> r = heterogeneity_test([0.80, 0.81, float("nan")], [0.001, 0.001, 0.002])
        >>> r["k"], r["df"], round(r["p"], 3), r["i2"]
        (2, 1, 0.823, 0.0)
    """
    from scipy import stats as sps

    a = np.asarray(aucs, dtype=float).ravel()
    v = np.asarray(variances, dtype=float).ravel()
    if a.shape != v.shape:
        raise UsmtlError(f"One variance per AUC. Received: {len(a)} AUCs and {len(v)} variances")
    keep = np.isfinite(a) & np.isfinite(v) & (v > 0)
    a, v = a[keep], v[keep]
    k = int(len(a))
    result = {"q": math.nan, "df": max(k - 1, 0), "p": math.nan, "i2": math.nan, "k": k,
              "pooled_auc": math.nan}
    if k < 2:
        return result
    w = 1.0 / v
    pooled = float(np.sum(w * a) / np.sum(w))
    q = float(np.sum(w * (a - pooled) ** 2))
    df = k - 1
    result.update(q=q, p=float(sps.chi2.sf(q, df)), i2=max(0.0, (q - df) / q) if q > 0 else 0.0,
                  pooled_auc=pooled)
    return result


def table_heterogeneity(table: pd.DataFrame) -> dict:
    """:func:`heterogeneity_test` over the testable groups of a :func:`subgroup_metrics`
    table."""
    groups = table[(table["kind"] == "group") & table["testable"].astype(bool)]
    return heterogeneity_test(groups["auc"].to_numpy(float), groups["auc_var"].to_numpy(float))


def plot_forest(table: pd.DataFrame, task: str, column: str, out_path: str,
                title: str | None = None) -> str | None:
    """A forest plot of a :func:`subgroup_metrics` table: each group's AUC with its CI, n in
    the labels, the numbers in a column on the right, the overall AUC as a vertical line,
    Cochran's Q and I² under the title; groups without an AUC are listed as not testable.
    Nothing is written when no group is testable (an empty plot says nothing).

    Args:
        table: from :func:`subgroup_metrics`.
        task: the task (title).
        column: the grouping column (title).
        out_path: the PNG written.
        title: the task's display name (default: derived from ``task``).

    Returns:
        ``out_path``, or None when no group is testable.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from usmtl.evaluation.cells import cell
    from usmtl.tasks import display_name

    het = table_heterogeneity(table)
    if het["k"] == 0:
        return None
    groups = table[table["kind"] == "group"].reset_index(drop=True)
    overall = table[table["kind"] == "overall"]
    fig, ax = plt.subplots(figsize=(7, 1.6 + 0.4 * max(len(groups), 1)))
    positions = np.arange(len(groups))[::-1]
    lows = [0.5]
    for y_pos, (_, row) in zip(positions, groups.iterrows()):
        auc = float(row["auc"])
        numbers = ax.get_yaxis_transform()  # x in axes units, y in data units
        if math.isnan(auc):
            ax.text(1.02, y_pos, "not testable", va="center", fontsize=8, color="grey",
                    transform=numbers)
            continue
        low, high = float(row["auc_ci_low"]), float(row["auc_ci_high"])
        ax.text(1.02, y_pos, f"{auc:.3f} ({cell(low)} to {cell(high)})", va="center",
                fontsize=8, transform=numbers)
        if not math.isnan(low):
            ax.errorbar(auc, y_pos, xerr=[[auc - low], [high - auc]], fmt="s", color="black",
                        capsize=3)
            lows.append(low)
        else:
            ax.plot(auc, y_pos, "s", color="black")
        lows.append(auc)
    if len(overall) and not math.isnan(float(overall["auc"].iloc[0])):
        ax.axvline(float(overall["auc"].iloc[0]), color="tab:red", linestyle="--",
                   label=f"overall AUC {float(overall['auc'].iloc[0]):.3f}")
        ax.legend(loc="lower left", fontsize=8)
    ax.axvline(0.5, color="grey", linestyle=":")
    ax.set_yticks(positions)
    ax.set_yticklabels([f"{g} (n={n})" for g, n in zip(groups["group"], groups["n"])])
    q = (f"Q = {het['q']:.2f}, df = {het['df']}, p = {het['p']:.3g}, "
         f"I² = {100 * het['i2']:.0f}%" if het["k"] >= 2
         else "heterogeneity not testable (one testable group)")
    ax.set(xlim=(max(0.0, min(lows) - 0.05), 1.0), xlabel="AUC (95% CI)",
           title=f"{title or display_name(task)} by {column}\n{q}")
    ax.text(1.02, len(groups) - 0.45, "AUC (95% CI)", fontsize=8, fontweight="bold",
            transform=ax.get_yaxis_transform())
    ax.set_ylim(-0.7, len(groups) - 0.3)
    return save_figure(fig, out_path)
