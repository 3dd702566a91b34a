"""Statistics over repeated runs, as the paper reports them (pure NumPy and SciPy).

- :func:`summarize_repeats`, :func:`format_mean_sd_ci`: the paper's "mean ± SD (95% CI)"
  over repeated runs (its interval, mean ± t * SD, or the CI of the mean);
  :func:`repeat_interval` is the same interval from printed summary statistics.
- :func:`unpaired_repeats_test`, :func:`paired_repeats_test`: Student's unpaired t-test
  between two models' repeats (the paper's), and the paired t-test;
  :func:`unpaired_test_from_stats` is the unpaired test from printed means and SDs, and
  :func:`unpaired_p_range_from_rounded` the range of p that their rounding allows.

Li, Guo et al., Front. Physiol. 13:882648 (2022) report mean ± SD over 5 repeats with the
interval mean ± t(0.975, 4)·SD and compare variants with Student's unpaired t-test.

Example:
    >>> from usmtl.evaluation.repeats import repeat_interval, unpaired_test_from_stats
    >>> [round(x, 4) for x in repeat_interval(0.836, 0.011, 5)]   # Table 3: (0.805, 0.866)
    [0.8055, 0.8665]
    >>> round(unpaired_test_from_stats(0.874, 0.004, 5, 0.871, 0.006, 5)["p"], 4)  # text: 0.379
    0.3795
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
from scipy import stats as _sps

from usmtl.errors import UsmtlError


def _floats(values) -> np.ndarray:
    return np.asarray(values, dtype=float).ravel()


def _same_length(*arrays) -> None:
    lengths = {len(a) for a in arrays}
    if len(lengths) > 1:
        raise ValueError(f"inputs differ in length. Received lengths: {[len(a) for a in arrays]}")


REPEAT_INTERVALS = ("paper", "mean")


def summarize_repeats(values, level: float = 0.95, bounds: tuple | None = None,
                      interval: str = "paper") -> dict:
    """Mean, SD (ddof=1) and a t-interval over repeated runs, the paper's "mean ± SD (95% CI)".

    Two intervals are computed, with t = t_{(1+level)/2, n-1}:

    - ``"paper"``: mean ± t * SD, the interval of Li, Guo et al., Front. Physiol. 13:882648,
      2022 (where one more repeat is expected to fall, not where the mean is). It reproduces
      their Table 3: 0.836 ± 0.011 over 5 repeats gives (0.805, 0.866).
    - ``"mean"``: mean ± t * SD / sqrt(n), the CI of the mean.

    Args:
        values: the metric of each repeat; NaN values are ignored.
        level: coverage of both intervals (0.95: 95%).
        bounds: ``(low, high)`` to clip both intervals to, e.g. ``(0, 1)`` for a proportion or
            an AUC (a t-interval of a few repeats easily leaves it); None: no clipping.
        interval: which interval ``ci_low``/``ci_high`` report: ``"paper"`` or ``"mean"``.

    Returns:
        ``{"mean", "sd", "n", "ci_low", "ci_high", "paper_low", "paper_high", "mean_ci_low",
        "mean_ci_high"}``: ``ci_low``/``ci_high`` is the interval chosen by ``interval``, the
        other four keys always hold both. With n < 2 the SD and all intervals are NaN (and
        the mean too with n = 0).

    Raises:
        UsmtlError: ``interval`` is not one of :data:`REPEAT_INTERVALS`.

    Example:
        >>> d = summarize_repeats([0.80, 0.82, 0.79, 0.84, 0.81])
        >>> format_mean_sd_ci(d)
        '0.812 ± 0.019 (0.759-0.865)'
        >>> format_mean_sd_ci(summarize_repeats([0.80, 0.82, 0.79, 0.84, 0.81], interval="mean"))
        '0.812 ± 0.019 (0.788-0.836)'
        >>> round(d["mean_ci_low"], 3), round(d["mean_ci_high"], 3)
        (0.788, 0.836)
    """
    if interval not in REPEAT_INTERVALS:
        raise UsmtlError(f"summarize_repeats: interval must be one of {list(REPEAT_INTERVALS)}. "
                         f"Received: {interval!r}")
    v = _floats(values)
    v = v[~np.isnan(v)]
    n = int(len(v))
    result = {"mean": float(v.mean()) if n else math.nan, "sd": math.nan, "n": n,
              "ci_low": math.nan, "ci_high": math.nan, "paper_low": math.nan,
              "paper_high": math.nan, "mean_ci_low": math.nan, "mean_ci_high": math.nan}
    if n < 2:
        return result
    mean, sd = result["mean"], float(v.std(ddof=1))
    result["sd"] = sd
    result["paper_low"], result["paper_high"] = repeat_interval(mean, sd, n, level, "paper", bounds)
    result["mean_ci_low"], result["mean_ci_high"] = repeat_interval(mean, sd, n, level, "mean", bounds)
    chosen = ("paper_low", "paper_high") if interval == "paper" else ("mean_ci_low", "mean_ci_high")
    result["ci_low"], result["ci_high"] = result[chosen[0]], result[chosen[1]]
    return result


def format_mean_sd_ci(d: dict, digits: int = 3) -> str:
    """``"0.812 ± 0.021 (0.786-0.838)"`` from :func:`summarize_repeats`; just the mean when the
    SD is undefined, ``"-"`` when the mean is; ``(a to b)`` when a bound is negative.

    Example:
        >>> format_mean_sd_ci({"mean": 0.8123, "sd": 0.0211, "ci_low": 0.7861, "ci_high": 0.8379})
        '0.812 ± 0.021 (0.786-0.838)'
    """
    def f(x):
        return f"{x:.{digits}f}"

    mean, sd = d.get("mean", math.nan), d.get("sd", math.nan)
    if mean is None or math.isnan(mean):
        return "-"
    if sd is None or math.isnan(sd):
        return f(mean)
    low, high = d.get("ci_low", math.nan), d.get("ci_high", math.nan)
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return f"{f(mean)} ± {f(sd)}"
    sep = " to " if low < 0 or high < 0 else "-"
    return f"{f(mean)} ± {f(sd)} ({f(low)}{sep}{f(high)})"


def paired_repeats_test(values_a, values_b) -> dict:
    """Paired t-test of two models over the same repeats (``scipy.stats.ttest_rel``):
    ``diff`` = mean of a - b, ``t``, two-sided ``p``, ``n`` pairs. Pairs with a NaN are
    dropped; n < 2 gives NaN t and p. Constant differences (zero spread, up to rounding) give
    t = 0, p = 1 when they are all zero, t = ±inf, p = 0 otherwise.

    Example:
        >>> r = paired_repeats_test([0.81, 0.83, 0.80, 0.84], [0.78, 0.80, 0.79, 0.80])
        >>> round(r["diff"], 4), round(r["p"], 4)
        (0.0275, 0.0222)
    """
    a, b = _floats(values_a), _floats(values_b)
    _same_length(a, b)
    keep = ~np.isnan(a) & ~np.isnan(b)
    a, b = a[keep], b[keep]
    n = int(len(a))
    d = a - b
    diff = float(d.mean()) if n else math.nan
    result = {"diff": diff, "t": math.nan, "p": math.nan, "n": n}
    if n < 2:
        return result
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()), 1e-300)
    if np.ptp(d) <= 1e-12 * scale:  # constant differences, up to rounding
        if abs(diff) <= 1e-12 * scale:
            result.update(t=0.0, p=1.0)
        else:
            result.update(t=math.copysign(math.inf, diff), p=0.0)
        return result
    t, p = _sps.ttest_rel(a, b)
    result.update(t=float(t), p=float(p))
    return result


def unpaired_repeats_test(values_a, values_b) -> dict:
    """Student's unpaired two-sample t-test with equal variances (``scipy.stats.ttest_ind``)
    of two models' repeats; the test that reproduces the p-values between variants in Li, Guo
    et al., Front. Physiol. 13:882648, 2022. Unlike :func:`paired_repeats_test` the repeats
    need not correspond, nor be equally many.

    Args:
        values_a: the metric of each repeat of model A; NaN values are dropped.
        values_b: the same for model B; NaN values are dropped, independently of A.

    Returns:
        ``{"diff", "t", "p", "n_a", "n_b"}``: ``diff`` = mean of a - mean of b (NaN when a side
        is empty), the t statistic, its two-sided ``p`` (n_a + n_b - 2 df), and the numbers
        of values used. Fewer than 2 values on a side gives NaN t and p. Both sides constant
        (zero pooled spread, up to rounding) gives t = 0, p = 1 when the constants are equal,
        t = ±inf, p = 0 otherwise.

    Example:
        >>> r = unpaired_repeats_test([0.81, 0.83, 0.80, 0.84], [0.78, 0.80, 0.79, 0.80])
        >>> round(r["diff"], 4), round(r["t"], 3), round(r["p"], 4), r["n_a"], r["n_b"]
        (0.0275, 2.668, 0.0371, 4, 4)
    """
    a, b = _floats(values_a), _floats(values_b)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    n_a, n_b = int(len(a)), int(len(b))
    diff = float(a.mean() - b.mean()) if n_a and n_b else math.nan
    result = {"diff": diff, "t": math.nan, "p": math.nan, "n_a": n_a, "n_b": n_b}
    if n_a < 2 or n_b < 2:
        return result
    scale = max(float(np.abs(a).max()), float(np.abs(b).max()), 1e-300)
    if max(np.ptp(a), np.ptp(b)) <= 1e-12 * scale:  # no spread on either side: SE is 0
        if abs(diff) <= 1e-12 * scale:
            result.update(t=0.0, p=1.0)
        else:
            result.update(t=math.copysign(math.inf, diff), p=0.0)
        return result
    with warnings.catch_warnings():
        # one constant side (e.g. AUC 1.0 in every repeat) is exact, not a precision loss
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        t, p = _sps.ttest_ind(a, b)
    result.update(t=float(t), p=float(p))
    return result


def repeat_interval(mean: float, sd: float, n: int, level: float = 0.95,
                    interval: str = "paper", bounds: tuple | None = None) -> tuple[float, float]:
    """The interval of :func:`summarize_repeats` from summary statistics: mean ± t·SD
    (``paper``, Li et al.'s) or mean ± t·SD/√n (``mean``), t = t((1+level)/2, n-1).

    Args:
        mean, sd, n: the mean, the SD (ddof=1) and the number of repeats (>= 2).
        level: the coverage.
        interval: ``paper`` or ``mean``.
        bounds: ``(low, high)`` to clip to, or None.

    Returns:
        ``(low, high)``; NaN for n < 2 or a NaN mean or SD.

    Raises:
        UsmtlError: ``interval`` is not one of :data:`REPEAT_INTERVALS`.
    """
    if interval not in REPEAT_INTERVALS:
        raise UsmtlError(f"interval must be one of {list(REPEAT_INTERVALS)}. Received: {interval!r}")
    if n < 2 or mean is None or sd is None or math.isnan(mean) or math.isnan(sd):
        return math.nan, math.nan
    half = float(_sps.t.ppf(0.5 + level / 2, n - 1)) * sd
    if interval == "mean":
        half /= math.sqrt(n)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return low, high


def unpaired_test_from_stats(mean_a: float, sd_a: float, n_a: int, mean_b: float, sd_b: float,
                             n_b: int) -> dict:
    """Student's unpaired t-test (equal variances) from means, SDs (ddof=1) and counts, as
    :func:`unpaired_repeats_test` computes it from the values: ``{"diff", "t", "p"}``.

    Example:
        >>> r = unpaired_test_from_stats(0.836, 0.011, 5, 0.817, 0.007, 5)
        >>> round(r["t"], 3), round(r["p"], 4)
        (3.258, 0.0116)
    """
    t, p = _sps.ttest_ind_from_stats(mean_a, sd_a, n_a, mean_b, sd_b, n_b, equal_var=True)
    return {"diff": float(mean_a - mean_b), "t": float(t), "p": float(p)}


def unpaired_p_range_from_rounded(mean_a: float, sd_a: float, n_a: int, mean_b: float,
                                  sd_b: float, n_b: int, digits: int = 3) -> tuple[float, float]:
    """The smallest and largest p of :func:`unpaired_test_from_stats` over every true mean and
    SD that rounds to the printed ones (each within half a unit of the last digit). p falls
    as |diff| grows and as the SDs shrink, so the extremes lie at the corners of that box.

    Example:
        >>> low, high = unpaired_p_range_from_rounded(0.836, 0.011, 5, 0.817, 0.007, 5)
        >>> round(low, 4), round(high, 4)   # the paper's text prints 0.009: within the range
        (0.0068, 0.019)
    """
    h = 0.5 * 10.0 ** -digits
    ps = []
    for da, db, sa, sb in itertools.product((-h, h), (-h, h), (-h, h), (-h, h)):
        ps.append(unpaired_test_from_stats(mean_a + da, max(sd_a + sa, 0.0), n_a,
                                           mean_b + db, max(sd_b + sb, 0.0), n_b)["p"])
    return float(min(ps)), float(max(ps))
