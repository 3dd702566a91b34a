"""Statistics for evaluating and comparing models: everything statistical lives here, with a
small, plain API usable from Python without the CLI (NumPy and SciPy only).

- :func:`delong_auc_variance`, :func:`delong_test`: AUC variance and the paired test of two
  correlated AUCs (DeLong, DeLong & Clarke-Pearson, Biometrics 44:837-845, 1988), computed
  with midranks (Sun & Xu, IEEE Signal Processing Letters 21:1389-1393, 2014).
- :func:`mcnemar_test`: paired accuracy of two classifiers (McNemar, Psychometrika
  12:153-157, 1947).
- :func:`patient_bootstrap_ci`, :func:`bootstrap_metrics`: percentile bootstrap CIs that
  resample PATIENTS (clusters), since the images of one patient are correlated (Efron &
  Tibshirani, An Introduction to the Bootstrap, 1993; resampling clusters, Davison & Hinkley,
  Bootstrap Methods and their Application, 1997, section 3.8).
- :func:`aggregate_patients`: image scores -> patient scores.
- :func:`youden_threshold`: the threshold maximising SE + SP - 1 (Youden, Cancer 3:32-35,
  1950).
- :func:`inconsistency_rates`, :func:`hierarchy_inconsistency`: parent/child disagreement.
- :func:`summarize_repeats`, :func:`format_mean_sd_ci`: the paper's "mean ± SD (95% CI)"
  over repeated runs (its interval, mean ± t * SD, or the CI of the mean).
- :func:`unpaired_repeats_test`, :func:`paired_repeats_test`: Student's unpaired t-test
  between two models' repeats (the paper's), and the paired t-test.

Labels are floats: 1, 0, or NaN (unknown); rows with an unknown label are left out everywhere.

Example:
    >>> import numpy as np
    >>> from usmtl.evaluation import stats
    >>> y = np.array([1, 1, 1, 0, 0, 0, np.nan])
    >>> a = np.array([0.9, 0.8, 0.4, 0.5, 0.2, 0.1, 0.7])
    >>> b = np.array([0.6, 0.3, 0.7, 0.4, 0.5, 0.2, 0.1])
    >>> r = stats.delong_test(y, a, b)
    >>> round(r["auc_a"], 3), round(r["auc_b"], 3), round(r["p"], 3)
    (0.889, 0.778, 0.724)
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as _sps

from usmtl.errors import UsmtlError
from usmtl.evaluation.metrics import METRICS, binary_metrics
from usmtl.evaluation.repeats import _floats, _same_length

#: A bootstrap CI is reported only when at least this share of the resamples gave a defined
#: metric (e.g. a resample without any positive has no AUC); otherwise it is NaN.
MIN_VALID_FRACTION = 0.5

# Upper bound on the elements of the per-chunk (resamples x images) work arrays.
_CHUNK_ELEMENTS = 2_000_000


def _z(level: float) -> float:
    return float(_sps.norm.ppf(0.5 + level / 2))


# --------------------------------------------------------------------------------------------
# DeLong
# --------------------------------------------------------------------------------------------

def _delong_components(y: np.ndarray, scores: np.ndarray):
    """AUCs and the DeLong covariance matrix of k scorers (``scores``: k x N) on clean data.

    Structural components (DeLong 1988), via midranks (Sun & Xu 2014): for a positive X_i,
    V10_i = (rank of X_i among all - rank among positives) / n = share of negatives below X_i
    (ties half); for a negative Y_j, V01_j = 1 - (rank among all - rank among negatives) / m =
    share of positives above Y_j. AUC = mean(V10) = mean(V01);
    S = cov(V10) / m + cov(V01) / n (covariances with m - 1 and n - 1 denominators).
    """
    pos, neg = y == 1, y == 0
    m, n = int(pos.sum()), int(neg.sum())
    k = scores.shape[0]
    if m == 0 or n == 0:
        return np.full(k, math.nan), np.full((k, k), math.nan)
    x, yy = scores[:, pos], scores[:, neg]
    tx = _sps.rankdata(x, axis=1)
    ty = _sps.rankdata(yy, axis=1)
    tz = _sps.rankdata(np.concatenate([x, yy], axis=1), axis=1)
    aucs = (tz[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * n)
    if m < 2 or n < 2:
        return aucs, np.full((k, k), math.nan)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    s = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    return aucs, s


def delong_auc_variance(y, score) -> tuple[float, float]:
    """ROC AUC and its DeLong variance (DeLong et al., Biometrics 1988; fast midrank form of
    Sun & Xu, IEEE SPL 2014). Rows with a NaN label or score are dropped. The AUC is NaN with
    one class only; the variance is NaN with fewer than 2 positives or 2 negatives.

    Example:
        >>> auc, var = delong_auc_variance([1, 1, 1, 0, 0, 0], [0.9, 0.8, 0.4, 0.5, 0.2, 0.1])
        >>> round(auc, 4), round(var, 4)
        (0.8889, 0.0247)
    """
    y, score = _floats(y), _floats(score)
    _same_length(y, score)
    keep = ~np.isnan(y) & ~np.isnan(score)
    aucs, s = _delong_components(y[keep], score[keep][None, :])
    return float(aucs[0]), float(s[0, 0])


def delong_test(y, score_a, score_b, level: float = 0.95) -> dict:
    """Paired DeLong test of two correlated AUCs on the same cases (DeLong et al., Biometrics
    1988; Sun & Xu, IEEE SPL 2014).

    ``diff = auc_a - auc_b``; ``se = sqrt(var_a + var_b - 2 cov_ab)`` from the structural
    components; ``z = diff / se``; two-sided normal ``p``; ``ci_low``/``ci_high``: normal CI
    of the difference at ``level``. Rows with a NaN label or a NaN in either score are dropped.
    Identical scores give diff 0 and p 1. A zero standard error with a non-zero difference
    (degenerate, e.g. a perfect scorer against a constant one) gives z = ±inf and p = 0.
    With one class only, or fewer than 2 cases of a class, the test is NaN.

    Example:
        >>> r = delong_test([1, 1, 1, 0, 0, 0], [0.9, 0.8, 0.4, 0.5, 0.2, 0.1],
        ...                 [0.6, 0.3, 0.7, 0.4, 0.5, 0.2])
        >>> round(r["diff"], 3), round(r["se"], 3), round(r["p"], 3)
        (0.111, 0.314, 0.724)
    """
    y, a, b = _floats(y), _floats(score_a), _floats(score_b)
    _same_length(y, a, b)
    keep = ~np.isnan(y) & ~np.isnan(a) & ~np.isnan(b)
    y = y[keep]
    aucs, s = _delong_components(y, np.vstack([a[keep], b[keep]]))
    result = {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "diff": float(aucs[0] - aucs[1]),
              "se": math.nan, "ci_low": math.nan, "ci_high": math.nan, "z": math.nan,
              "p": math.nan, "var_a": float(s[0, 0]), "var_b": float(s[1, 1]),
              "cov": float(s[0, 1]), "n": int(len(y)), "n_pos": int(np.sum(y == 1)),
              "n_neg": int(np.sum(y == 0))}
    var = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    if math.isnan(var):
        return result
    diff = result["diff"]
    scale = max(s[0, 0] + s[1, 1], 1e-300)
    if var <= 1e-12 * scale or var <= 0:  # zero up to rounding
        se = 0.0
        z = 0.0 if abs(diff) < 1e-12 else math.copysign(math.inf, diff)
        p = 1.0 if z == 0 else 0.0
        if z == 0:
            diff = result["diff"] = 0.0
    else:
        se = math.sqrt(var)
        z = diff / se
        p = float(2 * _sps.norm.sf(abs(z)))
    half = _z(level) * se
    result.update(se=se, z=z, p=min(p, 1.0), ci_low=diff - half, ci_high=diff + half)
    return result


# --------------------------------------------------------------------------------------------
# McNemar
# --------------------------------------------------------------------------------------------

def mcnemar_test(y, pred_a, pred_b, level: float = 0.95, exact_below: int = 25) -> dict:
    """McNemar's test of paired accuracy (McNemar, Psychometrika 1947).

    ``b`` = cases A gets right and B wrong, ``c`` = A wrong and B right. With
    ``b + c < exact_below`` (25) the exact two-sided binomial test of b ~ Bin(b + c, 1/2) is
    used (``statistic`` = min(b, c), ``exact`` True); otherwise the chi-square test with
    continuity correction, ``statistic = (|b - c| - 1)^2 / (b + c)`` on 1 df. ``b + c = 0``
    gives p = 1. Also ``acc_a``, ``acc_b``, ``diff = acc_a - acc_b`` and a Wald CI for a
    difference of paired proportions, se = sqrt(((b + c)/n - ((b - c)/n)^2) / n) (Agresti,
    Categorical Data Analysis, 2002, section 10.1). Predictions are 0/1 (or bool); rows with
    a NaN label or prediction are dropped.

    Example:
        >>> r = mcnemar_test([1, 1, 0, 0, 1, 0], [1, 1, 0, 0, 1, 1], [0, 1, 1, 0, 0, 1])
        >>> r["b"], r["c"], r["exact"], r["p"], round(r["diff"], 3)
        (3, 0, True, 0.25, 0.5)
    """
    y, a, b_ = _floats(y), _floats(pred_a), _floats(pred_b)
    _same_length(y, a, b_)
    keep = ~np.isnan(y) & ~np.isnan(a) & ~np.isnan(b_)
    y, a, b_ = y[keep], a[keep] >= 0.5, b_[keep] >= 0.5
    truth = y == 1
    right_a, right_b = a == truth, b_ == truth
    n = int(len(y))
    b = int(np.sum(right_a & ~right_b))
    c = int(np.sum(~right_a & right_b))
    result = {"b": b, "c": c, "n": n, "statistic": math.nan, "p": math.nan,
              "exact": b + c < exact_below, "acc_a": math.nan, "acc_b": math.nan,
              "diff": math.nan, "ci_low": math.nan, "ci_high": math.nan, "ci_method": "wald"}
    if n == 0:
        return result
    result["acc_a"], result["acc_b"] = float(right_a.mean()), float(right_b.mean())
    diff = (b - c) / n
    se = math.sqrt(max((b + c) / n - diff ** 2, 0.0) / n)
    half = _z(level) * se
    result.update(diff=diff, ci_low=diff - half, ci_high=diff + half)
    if b + c == 0:
        result.update(statistic=0.0, p=1.0)
    elif result["exact"]:
        p = 2 * _sps.binom.cdf(min(b, c), b + c, 0.5)
        result.update(statistic=float(min(b, c)), p=float(min(p, 1.0)))
    else:
        statistic = (abs(b - c) - 1) ** 2 / (b + c)
        result.update(statistic=float(statistic), p=float(_sps.chi2.sf(statistic, 1)))
    return result


# --------------------------------------------------------------------------------------------
# Patient bootstrap
# --------------------------------------------------------------------------------------------

def _codes(patient_ids, n: int):
    """Patient codes 0..P-1 for each row, and the unique ids (None: each row its own patient)."""
    if patient_ids is None:
        return np.arange(n), np.arange(n)
    ids = np.asarray(patient_ids).ravel()
    if len(ids) != n:
        raise ValueError(f"patient_ids has {len(ids)} entries for {n} rows")
    try:
        unique, codes = np.unique(ids, return_inverse=True)
    except TypeError:  # mixed types
        unique, codes = np.unique(ids.astype(str), return_inverse=True)
    return codes.ravel(), unique


def _clean(y, score, patient_ids):
    """Drop rows with a NaN label or score; patient codes over the patients left."""
    y, score = _floats(y), _floats(score)
    _same_length(y, score)
    keep = ~np.isnan(y) & ~np.isnan(score)
    codes, _ = _codes(patient_ids, len(y))
    codes = np.unique(codes[keep], return_inverse=True)[1].ravel()
    return y[keep], score[keep], codes


def _count_chunks(n_patients: int, n_boot: int, seed, rows_per_chunk: int | None = None):
    """Bootstrap draws as counts (resamples x patients): how often each patient is drawn in
    each resample (multinomial(P, 1/P)). Chunked so memory stays bounded; the chunking depends
    only on P, so every function here sees the same resamples for the same seed."""
    rng = np.random.default_rng(seed)
    rows = rows_per_chunk or max(1, _CHUNK_ELEMENTS // max(n_patients, 1))
    probs = np.full(n_patients, 1.0 / n_patients)
    done = 0
    while done < n_boot:
        size = min(rows, n_boot - done)
        yield rng.multinomial(n_patients, probs, size=size)
        done += size


def _percentile_ci(values: np.ndarray, level: float, n_boot: int) -> tuple[float, float]:
    valid = values[~np.isnan(values)]
    if n_boot <= 0 or len(valid) < max(2, MIN_VALID_FRACTION * n_boot):
        return math.nan, math.nan
    alpha = 1 - level
    low, high = np.quantile(valid, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def patient_bootstrap_ci(y, score, patient_ids, metric_fn, n_boot: int = 1000, seed=0,
                         level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of ``metric_fn(y, score) -> float``, resampling PATIENTS with
    replacement: all images of a drawn patient come along (cluster bootstrap; Efron &
    Tibshirani 1993, Davison & Hinkley 1997 section 3.8). ``patient_ids=None`` treats each
    image as its own patient (the ordinary image-level bootstrap).

    Rows with a NaN label or score are dropped first. Resamples where the metric is NaN (e.g.
    no positive drawn) are skipped; if fewer than ``MIN_VALID_FRACTION`` of them are valid the
    CI is (NaN, NaN). Same seed, same resamples as :func:`bootstrap_metrics`.

    Example:
        >>> from usmtl.evaluation.metrics import roc_auc
        >>> y = [1, 0, 1, 0, 1, 0, 1, 0]
        >>> s = [0.9, 0.3, 0.6, 0.4, 0.8, 0.7, 0.55, 0.2]
        >>> low, high = patient_bootstrap_ci(y, s, [1, 1, 2, 2, 3, 3, 4, 4], roc_auc, n_boot=200)
        >>> 0 <= low <= high <= 1
        True
    """
    y, score, codes = _clean(y, score, patient_ids)
    if len(y) == 0:
        return math.nan, math.nan
    n_patients = int(codes.max()) + 1
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes, minlength=n_patients)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    values = np.empty(n_boot)
    i = 0
    for counts in _count_chunks(n_patients, n_boot, seed):
        for row in counts:
            drawn = np.repeat(np.arange(n_patients), row)  # patient codes, with repeats
            lengths = sizes[drawn]
            offsets = np.repeat(starts[drawn] - np.cumsum(lengths) + lengths, lengths)
            idx = order[offsets + np.arange(lengths.sum())]
            values[i] = metric_fn(y[idx], score[idx])
            i += 1
    return _percentile_ci(values, level, n_boot)


def _weighted_metrics(counts: np.ndarray, y: np.ndarray, score: np.ndarray, codes: np.ndarray,
                      threshold: float) -> dict:
    """All METRICS for each resample given as patient counts (resamples x patients)."""
    n_patients = counts.shape[1]
    pred = score >= threshold
    pos = y == 1

    def per_patient(mask):
        return np.bincount(codes, weights=mask.astype(float), minlength=n_patients)

    cells = np.stack([per_patient(pred & pos), per_patient(pred & ~pos),
                      per_patient(~pred & pos), per_patient(~pred & ~pos)], axis=1)
    tp, fp, fn, tn = (counts @ cells).T
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["accuracy"] = (tp + tn) / (tp + fp + fn + tn)
        out["sensitivity"] = tp / (tp + fn)
        out["specificity"] = tn / (tn + fp)
        out["precision"] = tp / (tp + fp)
        out["f1"] = 2 * tp / (2 * tp + fp + fn)
        out["auc"] = _weighted_auc(counts, pos, score, codes)
    for key, value in out.items():
        value[~np.isfinite(value)] = math.nan
    return out


def _weighted_auc(counts: np.ndarray, pos: np.ndarray, score: np.ndarray,
                  codes: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC (ties half) per resample, image weight = its patient's draw count."""
    order = np.argsort(score, kind="stable")
    s, is_pos, pat = score[order], pos[order].astype(float), codes[order]
    n_img = len(s)
    # first and last sorted index of each image's tie group
    new = np.concatenate([[True], s[1:] != s[:-1]])
    group = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    last = np.concatenate([first[1:] - 1, [n_img - 1]])
    g_first, g_last = first[group], last[group]
    result = np.empty(counts.shape[0])
    rows = max(1, _CHUNK_ELEMENTS // max(n_img, 1))
    for start in range(0, counts.shape[0], rows):
        w = counts[start:start + rows][:, pat].astype(float)
        w_pos, w_neg = w * is_pos, w * (1 - is_pos)
        cum_neg = np.cumsum(w_neg, axis=1)
        # cum_neg[:, k]: negative weight among the first k sorted images
        cum_neg = np.concatenate([np.zeros((len(w), 1)), cum_neg], axis=1)
        below = cum_neg[:, g_first]
        tied = cum_neg[:, g_last + 1] - below
        num = np.sum(w_pos * (below + 0.5 * tied), axis=1)
        den = w_pos.sum(axis=1) * w_neg.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            result[start:start + rows] = np.where(den > 0, num / den, math.nan)
    return result


def bootstrap_metrics(y, score, patient_ids, threshold: float = 0.5, n_boot: int = 1000,
                      seed=0, level: float = 0.95) -> dict:
    """Every metric of :data:`usmtl.evaluation.metrics.METRICS` with a patient-bootstrap
    percentile CI: ``{metric: {"value", "ci_low", "ci_high"}}``.

    ``value`` is :func:`usmtl.evaluation.metrics.binary_metrics` on all known rows. The CI
    resamples patients as :func:`patient_bootstrap_ci` does (same resamples for the same
    seed), but vectorised: each resample is a vector of patient draw counts used as image
    weights, so 1000 resamples of a few hundred images take milliseconds.
    ``patient_ids=None``: image-level bootstrap.

    Example:
        >>> r = bootstrap_metrics([1, 0, 1, 0, 1, 0], [0.9, 0.3, 0.6, 0.4, 0.8, 0.7],
        ...                       ["a", "a", "b", "b", "c", "c"], n_boot=200)
        >>> round(r["auc"]["value"], 3), r["accuracy"]["value"]
        (0.889, 0.8333333333333334)
    """
    y, score, codes = _clean(y, score, patient_ids)
    point = binary_metrics(y, score, threshold)
    result = {m: {"value": float(point[m]), "ci_low": math.nan, "ci_high": math.nan}
              for m in METRICS}
    if len(y) == 0 or n_boot <= 0:
        return result
    n_patients = int(codes.max()) + 1
    boot = {m: [] for m in METRICS}
    for counts in _count_chunks(n_patients, n_boot, seed):
        for m, values in _weighted_metrics(counts, y, score, codes, threshold).items():
            boot[m].append(values)
    for m in METRICS:
        low, high = _percentile_ci(np.concatenate(boot[m]), level, n_boot)
        result[m]["ci_low"], result[m]["ci_high"] = low, high
    return result


# --------------------------------------------------------------------------------------------
# Patient aggregation, Youden threshold
# --------------------------------------------------------------------------------------------

def _aggregate(codes: np.ndarray, n_groups: int, values: np.ndarray, how: str) -> np.ndarray:
    known = ~np.isnan(values)
    if how == "mean":
        sums = np.bincount(codes, weights=np.where(known, values, 0.0), minlength=n_groups)
        n = np.bincount(codes, weights=known.astype(float), minlength=n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, sums / np.maximum(n, 1), math.nan)
    out = np.full(n_groups, math.nan)
    np.fmax.at(out, codes, values)  # fmax ignores NaN
    return out


def aggregate_patients(y_or_frame, score=None, patient_ids=None, how: str = "mean"):
    """Patient-level scores and labels: score = mean (or max) of a patient's known image
    scores; label = max over the patient's known image labels (a patient is positive if any
    image is), NaN when all are unknown.

    Arrays: ``aggregate_patients(y, score, patient_ids, how)`` -> ``(y_patient,
    score_patient, patient_ids)`` with the patients in sorted order.
    A prediction frame: ``aggregate_patients(frame, how=...)`` -> a frame with one row per
    patient: ``patient_id``, ``n_images``, and every ``p_<task>`` / ``y_<task>`` aggregated.

    Example:
        >>> nan = float("nan")
        >>> y, s, ids = aggregate_patients([0, 1, nan], [0.2, 0.6, 0.4], ["p1", "p1", "p2"])
        >>> y.tolist(), s.tolist(), ids.tolist()
        ([1.0, nan], [0.4, 0.4], ['p1', 'p2'])
    """
    if how not in ("mean", "max"):
        raise ValueError(f"how must be 'mean' or 'max'. Received: {how!r}")
    if hasattr(y_or_frame, "columns"):
        import pandas as pd

        frame = y_or_frame
        codes, unique = _codes(frame["patient_id"].to_numpy(), len(frame))
        out = {"patient_id": unique,
               "n_images": np.bincount(codes, minlength=len(unique)).astype(int)}
        for column in frame.columns:
            if column.startswith("p_"):
                out[column] = _aggregate(codes, len(unique), frame[column].to_numpy(float), how)
            elif column.startswith("y_"):
                out[column] = _aggregate(codes, len(unique), frame[column].to_numpy(float), "max")
        return pd.DataFrame(out)
    y, score = _floats(y_or_frame), _floats(score)
    _same_length(y, score)
    codes, unique = _codes(patient_ids, len(y))
    return (_aggregate(codes, len(unique), y, "max"), _aggregate(codes, len(unique), score, how),
            unique)


def youden_threshold(y, score) -> float:
    """The threshold maximising Youden's J = SE + SP - 1 on the given data (Youden, Cancer
    1950), with positives predicted as ``score >= threshold`` (as in
    :func:`usmtl.evaluation.metrics.binary_metrics`). It is one of the observed scores; among
    equally good ones the highest. NaN with one class only or no data.

    Example:
        >>> youden_threshold([0, 0, 1, 0, 1, 1], [0.1, 0.3, 0.35, 0.2, 0.8, 0.9])
        0.35
    """
    y, score = _floats(y), _floats(score)
    _same_length(y, score)
    keep = ~np.isnan(y) & ~np.isnan(score)
    y, score = y[keep], score[keep]
    n_pos, n_neg = int(np.sum(y == 1)), int(np.sum(y == 0))
    if n_pos == 0 or n_neg == 0:
        return math.nan
    levels, inverse = np.unique(score, return_inverse=True)  # ascending
    pos_at = np.bincount(inverse, weights=(y == 1).astype(float), minlength=len(levels))
    neg_at = np.bincount(inverse, weights=(y == 0).astype(float), minlength=len(levels))
    se = np.cumsum(pos_at[::-1])[::-1] / n_pos  # share of positives with score >= level
    sp = (np.cumsum(neg_at) - neg_at) / n_neg  # share of negatives with score < level
    j = se + sp - 1
    best = np.flatnonzero(j >= j.max() - 1e-12)[-1]
    return float(levels[best])


# --------------------------------------------------------------------------------------------
# Hierarchy inconsistency
# --------------------------------------------------------------------------------------------

def inconsistency_rates(p_parent, p_child, threshold: float = 0.5) -> dict:
    """How often a child head contradicts its parent (e.g. ALN metastasis without malignancy).

    ``hard``: share of rows with child >= threshold while parent < threshold; ``soft``: share
    with child score > parent score. Rows with a NaN in either are left out; ``n`` counts the
    rest (rates NaN when n = 0).

    Example:
        >>> inconsistency_rates([0.9, 0.3, 0.2, 0.6], [0.7, 0.6, 0.1, 0.65])
        {'hard': 0.25, 'soft': 0.5, 'n': 4, 'hard_count': 1, 'soft_count': 2}
    """
    parent, child = _floats(p_parent), _floats(p_child)
    _same_length(parent, child)
    keep = ~np.isnan(parent) & ~np.isnan(child)
    parent, child = parent[keep], child[keep]
    n = int(len(parent))
    hard = int(np.sum((child >= threshold) & (parent < threshold)))
    soft = int(np.sum(child > parent))
    return {"hard": hard / n if n else math.nan, "soft": soft / n if n else math.nan, "n": n,
            "hard_count": hard, "soft_count": soft}


def hierarchy_inconsistency(frame, edges, threshold: float = 0.5) -> dict:
    """:func:`inconsistency_rates` for each edge of a prediction frame (``p_<task>``
    columns): ``{"parent>child": {hard, soft, n, hard_count, soft_count}}``. Edges are
    ``(parent, child)`` pairs or ``"parent>child"`` strings.

    Example:
        >>> import pandas as pd
        >>> f = pd.DataFrame({"p_malignancy": [0.9, 0.2], "p_alnm": [0.6, 0.7]})
        >>> hierarchy_inconsistency(f, [("malignancy", "alnm")])["malignancy>alnm"]["hard_count"]
        1
    """
    result = {}
    for edge in edges:
        parent, child = edge.split(">") if isinstance(edge, str) else edge
        parent, child = parent.strip(), child.strip()
        missing = [f"p_{t}" for t in (parent, child) if f"p_{t}" not in frame.columns]
        if missing:
            raise UsmtlError(f"Edge {parent}>{child}: the predictions lack {missing}. Received "
                             f"columns: {list(frame.columns)}")
        result[f"{parent}>{child}"] = inconsistency_rates(
            frame[f"p_{parent}"].to_numpy(float), frame[f"p_{child}"].to_numpy(float), threshold)
    return result


# --------------------------------------------------------------------------------------------
# Repeated runs
# --------------------------------------------------------------------------------------------

#: The intervals :func:`summarize_repeats` can report as ``ci_low``/``ci_high``.


# Over repeated runs: their own module, re-exported here (one import for every statistic).
from usmtl.evaluation.repeats import (  # noqa: E402,F401
    REPEAT_INTERVALS, format_mean_sd_ci, paired_repeats_test, repeat_interval, summarize_repeats,
    unpaired_repeats_test, unpaired_test_from_stats, unpaired_p_range_from_rounded)
