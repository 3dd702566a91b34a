"""usmtl.evaluation.stats against hand computations and independent references."""

import doctest
import math
import re
import statistics
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from usmtl.errors import UsmtlError
from usmtl.evaluation import stats
from usmtl.evaluation.metrics import METRICS, binary_metrics, roc_auc

NAN = math.nan


def sample(seed, n=120, signal=0.8, ties=False, n_patients=None):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(float)
    y[:2] = [0, 1]
    score = signal * y + rng.normal(0, 1, n)
    if ties:
        score = np.round(score, 0)
    patients = rng.integers(0, n_patients or n, n)
    return y, score, patients


# ------------------------------------------------------------------------------------ DeLong

# Three positives P1..P3 and three negatives N1..N3, two scorers (tie in A: P2 = N1 = 0.6).
Y6 = [1, 1, 1, 0, 0, 0]
A6 = [0.9, 0.6, 0.4, 0.6, 0.3, 0.1]
B6 = [0.8, 0.7, 0.2, 0.9, 0.5, 0.1]


def _var(v):
    return statistics.variance(v)  # denominator k - 1, as in DeLong (1988)


def _cov(u, v):
    mu, mv = sum(u) / len(u), sum(v) / len(v)
    return sum((a - mu) * (b - mv) for a, b in zip(u, v)) / (len(u) - 1)


def test_delong_variance_by_hand():
    # Placements written out by hand. V10 of a positive: share of negatives below it (ties
    # count 1/2); V01 of a negative: share of positives above it (ties 1/2).
    v10_a = [3 / 3, (2 + 0.5) / 3, 2 / 3]  # 0.9 > all; 0.6 > 0.3, 0.1, = 0.6; 0.4 > 0.3, 0.1
    v01_a = [(1 + 0.5) / 3, 3 / 3, 3 / 3]  # 0.6 < 0.9, = 0.6; 0.3 < all; 0.1 < all
    m = n = 3
    auc = sum(v10_a) / m
    assert auc == pytest.approx(sum(v01_a) / n)
    var = _var(v10_a) / m + _var(v01_a) / n
    assert auc == pytest.approx(5 / 6)
    assert var == pytest.approx(1 / 27)  # (1/36)/3 + (1/12)/3

    ours_auc, ours_var = stats.delong_auc_variance(Y6, A6)
    assert ours_auc == pytest.approx(auc, abs=1e-12)
    assert ours_var == pytest.approx(var, abs=1e-12)
    assert ours_auc == pytest.approx(roc_auc_score(Y6, A6), abs=1e-12)


def test_delong_paired_by_hand():
    v10_a, v01_a = [1, 5 / 6, 2 / 3], [1 / 2, 1, 1]
    v10_b = [2 / 3, 2 / 3, 1 / 3]  # 0.8 > 0.5, 0.1; 0.7 > 0.5, 0.1; 0.2 > 0.1
    v01_b = [0, 2 / 3, 1]  # 0.9 above every positive; 0.5 < 0.8, 0.7; 0.1 < all
    m = n = 3
    auc_a, auc_b = sum(v10_a) / m, sum(v10_b) / m
    var_a = _var(v10_a) / m + _var(v01_a) / n
    var_b = _var(v10_b) / m + _var(v01_b) / n
    cov_ab = _cov(v10_a, v10_b) / m + _cov(v01_a, v01_b) / n
    assert (auc_a, auc_b) == pytest.approx((5 / 6, 5 / 9))
    assert (var_b, cov_ab) == pytest.approx((8 / 81, 1 / 18))
    se = math.sqrt(var_a + var_b - 2 * cov_ab)  # sqrt(2/81)
    z = (auc_a - auc_b) / se  # 5 / (2 sqrt 2)
    p = math.erfc(abs(z) / math.sqrt(2))

    r = stats.delong_test(Y6, A6, B6)
    assert r["auc_a"] == pytest.approx(auc_a, abs=1e-12)
    assert r["auc_b"] == pytest.approx(auc_b, abs=1e-12)
    assert r["diff"] == pytest.approx(5 / 18, abs=1e-12)
    assert r["var_a"] == pytest.approx(var_a) and r["var_b"] == pytest.approx(var_b)
    assert r["cov"] == pytest.approx(cov_ab, abs=1e-12)
    assert r["se"] == pytest.approx(se, abs=1e-12)
    assert r["z"] == pytest.approx(5 / (2 * math.sqrt(2)), abs=1e-12)
    assert r["p"] == pytest.approx(p, abs=1e-12)
    assert r["ci_low"] == pytest.approx(5 / 18 - 1.959963984540054 * se, abs=1e-9)
    assert r["ci_high"] == pytest.approx(5 / 18 + 1.959963984540054 * se, abs=1e-9)
    assert (r["n"], r["n_pos"], r["n_neg"]) == (6, 3, 3)

    swapped = stats.delong_test(Y6, B6, A6)
    assert swapped["diff"] == pytest.approx(-r["diff"]) and swapped["p"] == pytest.approx(r["p"])
    # row order and unknown labels do not matter
    order = [4, 0, 5, 2, 1, 3]
    y_extra = np.array([Y6[i] for i in order] + [NAN, NAN])
    a_extra = np.array([A6[i] for i in order] + [0.99, 0.01])
    b_extra = np.array([B6[i] for i in order] + [0.01, 0.99])
    again = stats.delong_test(y_extra, a_extra, b_extra)
    for key in ("auc_a", "auc_b", "se", "p", "ci_low", "ci_high"):
        assert again[key] == pytest.approx(r[key], abs=1e-12)


def brute_force_delong(y, a, b):
    """Placements from the kernel psi(x, y) = 1, 1/2, 0 over all positive-negative pairs."""
    y, a, b = map(np.asarray, (y, a, b))
    out = []
    for s in (a, b):
        x, z = s[y == 1][:, None], s[y == 0][None, :]
        psi = (x > z) + 0.5 * (x == z)
        out.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))
    (auc_a, v10_a, v01_a), (auc_b, v10_b, v01_b) = out
    m, n = len(v10_a), len(v01_a)
    s10 = np.cov(np.vstack([v10_a, v10_b]))
    s01 = np.cov(np.vstack([v01_a, v01_b]))
    s_mat = s10 / m + s01 / n
    return auc_a, auc_b, s_mat


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_matches_brute_force_and_sklearn(seed, ties):
    y, a, _ = sample(seed, n=80, ties=ties)
    b = np.round(0.5 * a + np.random.default_rng(seed + 10).normal(0, 1, len(y)), 1 if ties else 8)
    auc_a, auc_b, s_mat = brute_force_delong(y, a, b)
    r = stats.delong_test(y, a, b)
    assert r["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert r["auc_b"] == pytest.approx(roc_auc_score(y, b), abs=1e-12)
    assert r["auc_a"] == pytest.approx(auc_a, abs=1e-12)
    assert r["var_a"] == pytest.approx(s_mat[0, 0], rel=1e-9)
    assert r["var_b"] == pytest.approx(s_mat[1, 1], rel=1e-9)
    assert r["cov"] == pytest.approx(s_mat[0, 1], rel=1e-9, abs=1e-15)
    assert stats.delong_auc_variance(y, b) == pytest.approx((auc_b, s_mat[1, 1]), rel=1e-9)
    assert 0 <= r["p"] <= 1 and r["ci_low"] <= r["diff"] <= r["ci_high"]


@pytest.mark.parametrize("scores", [A6, [0.5] * 6, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
def test_delong_identical_scores(scores):
    r = stats.delong_test(Y6, scores, list(scores))
    assert r["diff"] == 0 and r["p"] == 1 and r["z"] == 0
    assert r["ci_low"] == r["ci_high"] == 0


@pytest.mark.parametrize("y, a, b", [
    ([1, 1, 1], [0.2, 0.5, 0.9], [0.1, 0.4, 0.3]),  # one class only
    ([0, 0, NAN], [0.2, 0.5, 0.9], [0.1, 0.4, 0.3]),  # one known class
    ([NAN, NAN], [0.2, 0.5], [0.1, 0.4]),  # all unknown
    ([], [], []),  # empty
])
def test_delong_undefined(y, a, b):
    r = stats.delong_test(y, a, b)
    assert all(math.isnan(r[k]) for k in ("auc_a", "auc_b", "diff", "se", "z", "p", "ci_low"))
    assert all(math.isnan(v) for v in stats.delong_auc_variance(y, a))


def test_delong_one_case_of_a_class_has_auc_but_no_variance():
    auc, var = stats.delong_auc_variance([1, 0, 0, 0], [0.9, 0.1, 0.95, 0.2])
    assert auc == pytest.approx(2 / 3) and math.isnan(var)


def test_delong_length_mismatch():
    with pytest.raises(ValueError):
        stats.delong_test([1, 0], [0.1, 0.2], [0.3])


def test_delong_null_simulation():
    """Two equally good, correlated scorers: about 5% of p-values below 0.05."""
    rng = np.random.default_rng(123)
    p_values = []
    for _ in range(400):
        y = (rng.random(80) < 0.5).astype(float)
        common = y + rng.normal(0, 1, 80)
        a, b = common + rng.normal(0, 0.7, 80), common + rng.normal(0, 0.7, 80)
        p_values.append(stats.delong_test(y, a, b)["p"])
    rate = np.mean(np.array(p_values) < 0.05)
    assert 0.02 <= rate <= 0.09


# ----------------------------------------------------------------------------------- McNemar

def paired_predictions(b, c, both_right=7, both_wrong=4, seed=0):
    """Labels and predictions with b cases only A gets right and c only B gets right."""
    rng = np.random.default_rng(seed)
    kinds = np.array(["b"] * b + ["c"] * c + ["rr"] * both_right + ["ww"] * both_wrong)
    rng.shuffle(kinds)
    y = rng.integers(0, 2, len(kinds)).astype(float)
    right_a = np.isin(kinds, ["b", "rr"])
    right_b = np.isin(kinds, ["c", "rr"])
    pred_a = np.where(right_a, y, 1 - y)
    pred_b = np.where(right_b, y, 1 - y)
    return y, pred_a, pred_b


@pytest.mark.parametrize("b, c", [(3, 0), (0, 5), (5, 9), (12, 12), (1, 23), (0, 24), (10, 3)])
def test_mcnemar_exact_matches_binomtest(b, c):
    y, pa, pb = paired_predictions(b, c)
    r = stats.mcnemar_test(y, pa, pb)
    assert (r["b"], r["c"], r["exact"]) == (b, c, True)
    assert r["p"] == pytest.approx(sps.binomtest(b, b + c, 0.5).pvalue, abs=1e-12)
    n = b + c + 11
    assert r["acc_a"] == pytest.approx((b + 7) / n) and r["acc_b"] == pytest.approx((c + 7) / n)
    assert r["diff"] == pytest.approx((b - c) / n)
    # Wald CI for paired proportions, by hand
    se = math.sqrt(((b + c) / n - ((b - c) / n) ** 2) / n)
    assert r["ci_low"] == pytest.approx((b - c) / n - 1.959963984540054 * se, abs=1e-9)
    assert r["ci_high"] == pytest.approx((b - c) / n + 1.959963984540054 * se, abs=1e-9)


@pytest.mark.parametrize("b, c", [(20, 5), (13, 12), (30, 40), (100, 60), (0, 25)])
def test_mcnemar_chi_square_by_hand(b, c):
    y, pa, pb = paired_predictions(b, c, both_right=50, both_wrong=9)
    r = stats.mcnemar_test(y, pa, pb)
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    p = math.erfc(math.sqrt(statistic / 2))  # chi-square survival function, 1 df
    assert r["exact"] is False
    assert r["statistic"] == pytest.approx(statistic, abs=1e-12)
    assert r["p"] == pytest.approx(p, abs=1e-12)


def test_mcnemar_edge_cases():
    y, pa, pb = paired_predictions(0, 0)
    r = stats.mcnemar_test(y, pa, pb)
    assert (r["b"], r["c"], r["p"], r["diff"]) == (0, 0, 1.0, 0.0)
    empty = stats.mcnemar_test([], [], [])
    assert empty["n"] == 0 and math.isnan(empty["p"]) and math.isnan(empty["acc_a"])
    # unknown labels dropped; booleans accepted
    r = stats.mcnemar_test([1, 0, NAN, 1], np.array([True, False, True, False]),
                           np.array([False, False, False, False]))
    assert (r["n"], r["b"], r["c"]) == (3, 1, 0)
    assert r["acc_a"] == pytest.approx(2 / 3) and r["acc_b"] == pytest.approx(1 / 3)


# --------------------------------------------------------------------------------- bootstrap

def duplicated(copies=4, n_patients=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.tile([0.0, 1.0], n_patients // 2)
    score = 0.25 * y + rng.random(n_patients) * 0.75
    ids = np.arange(n_patients)
    return ((y, score, ids),
            (np.repeat(y, copies), np.repeat(score, copies), np.repeat(ids, copies)))


def test_patient_bootstrap_widens_with_duplicated_images():
    (y, s, ids), (y4, s4, ids4) = duplicated()
    low, high = stats.patient_bootstrap_ci(y, s, ids, roc_auc, n_boot=400)
    p_low, p_high = stats.patient_bootstrap_ci(y4, s4, ids4, roc_auc, n_boot=400)
    i_low, i_high = stats.patient_bootstrap_ci(y4, s4, None, roc_auc, n_boot=400)
    # resampling patients: duplicating a patient's image changes nothing
    assert (p_low, p_high) == pytest.approx((low, high), abs=1e-9)
    # resampling images as if independent: about half as wide (sqrt 4)
    assert (p_high - p_low) > 1.5 * (i_high - i_low)
    assert i_low <= roc_auc(y4, s4) <= i_high


@pytest.mark.parametrize("metric", ["auc", "accuracy", "sensitivity", "specificity", "f1"])
def test_bootstrap_metrics_widens_with_duplicated_images(metric):
    (y, s, ids), (y4, s4, ids4) = duplicated(seed=1)
    original = stats.bootstrap_metrics(y, s, ids, n_boot=400)[metric]
    patient = stats.bootstrap_metrics(y4, s4, ids4, n_boot=400)[metric]
    image = stats.bootstrap_metrics(y4, s4, None, n_boot=400)[metric]
    assert patient["ci_low"] == pytest.approx(original["ci_low"], abs=1e-9)
    assert patient["ci_high"] == pytest.approx(original["ci_high"], abs=1e-9)
    assert patient["value"] == pytest.approx(image["value"]) == pytest.approx(original["value"])
    width = patient["ci_high"] - patient["ci_low"]
    assert width > 1.5 * (image["ci_high"] - image["ci_low"])


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n_patients", [None, 30])
def test_bootstrap_metrics_equals_generic_bootstrap(n_patients, ties):
    """The vectorised resampling gives the same CIs as resampling and recomputing."""
    y, s, ids = sample(3, n=90, ties=ties, n_patients=n_patients)
    y[5] = NAN
    fast = stats.bootstrap_metrics(y, s, ids, threshold=0.4, n_boot=150, seed=7)
    for metric in METRICS:
        slow = stats.patient_bootstrap_ci(y, s, ids, lambda a, b: binary_metrics(a, b, 0.4)[metric],
                                          n_boot=150, seed=7)
        assert (fast[metric]["ci_low"], fast[metric]["ci_high"]) == pytest.approx(slow, abs=1e-9)
        assert fast[metric]["value"] == pytest.approx(binary_metrics(y, s, 0.4)[metric])


def test_bootstrap_drops_unknown_labels_and_is_seeded():
    y, s, ids = sample(4, n_patients=40)
    with_nan = np.concatenate([y, [NAN, NAN]])
    r1 = stats.bootstrap_metrics(with_nan, np.concatenate([s, [0.1, 0.9]]),
                                 np.concatenate([ids, [ids[0], 999]]), n_boot=200, seed=3)
    r2 = stats.bootstrap_metrics(y, s, ids, n_boot=200, seed=3)
    assert r1 == r2
    assert stats.bootstrap_metrics(y, s, ids, n_boot=200, seed=4) != r2


def test_bootstrap_edge_cases():
    one_class = stats.bootstrap_metrics([1, 1, 1, 1], [0.2, 0.7, 0.9, 0.4], [1, 1, 2, 3],
                                        n_boot=100)
    assert math.isnan(one_class["auc"]["value"]) and math.isnan(one_class["auc"]["ci_low"])
    assert math.isnan(one_class["specificity"]["ci_high"])
    assert one_class["sensitivity"]["value"] == 0.5 and one_class["sensitivity"]["ci_low"] <= 0.5
    empty = stats.bootstrap_metrics([], [], [], n_boot=50)
    assert set(empty) == set(METRICS)
    assert all(math.isnan(v) for d in empty.values() for v in d.values())
    assert all(math.isnan(v) for v in stats.patient_bootstrap_ci([], [], [], roc_auc, n_boot=50))
    assert all(math.isnan(v) for v in
               stats.patient_bootstrap_ci([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], None,
                                          lambda a, b: NAN, n_boot=50))
    ties = stats.bootstrap_metrics([0, 1, 0, 1, 1], [0.5] * 5, ["a", "a", "b", "c", "d"],
                                   n_boot=100)
    assert ties["auc"]["value"] == 0.5 and ties["auc"]["ci_low"] == ties["auc"]["ci_high"] == 0.5


def test_bootstrap_metrics_speed():
    y, s, ids = sample(5, n=600, n_patients=250)
    start = time.perf_counter()
    stats.bootstrap_metrics(y, s, ids.astype(str), n_boot=1000)
    assert time.perf_counter() - start < 2.0


# ---------------------------------------------------------------- patients, Youden threshold

@pytest.mark.parametrize("how, expected", [("mean", [0.4, 0.5, 0.8]), ("max", [0.6, 0.5, 0.9])])
def test_aggregate_patients_arrays(how, expected):
    y = [0, 1, NAN, NAN, 0, NAN]
    s = [0.2, 0.6, 0.5, NAN, 0.7, 0.9]
    ids = ["p1", "p1", "p2", "p2", "p3", "p3"]
    py, ps, pids = stats.aggregate_patients(y, s, ids, how=how)
    assert list(pids) == ["p1", "p2", "p3"]
    np.testing.assert_array_equal(py, [1, NAN, 0])
    np.testing.assert_allclose(ps, expected)


def test_aggregate_patients_frame_and_errors():
    frame = pd.DataFrame({"image": list("abcd"), "patient_id": ["x", "y", "x", "x"],
                          "p_malignancy": [0.2, 0.9, 0.5, 0.8], "y_malignancy": [0, 1, 1, NAN],
                          "p_alnm": [0.1, 0.3, 0.2, 0.6], "y_alnm": [NAN, 0, NAN, NAN]})
    patients = stats.aggregate_patients(frame, how="max")
    assert list(patients["patient_id"]) == ["x", "y"]
    assert list(patients["n_images"]) == [3, 1]
    assert list(patients["p_malignancy"]) == [0.8, 0.9]
    assert list(patients["y_malignancy"]) == [1, 1]
    assert patients["y_alnm"].tolist()[1] == 0 and math.isnan(patients["y_alnm"][0])
    mean = stats.aggregate_patients(frame)
    assert mean["p_alnm"].tolist() == pytest.approx([0.3, 0.3])
    empty = stats.aggregate_patients([], [], [])
    assert all(len(part) == 0 for part in empty)
    with pytest.raises(ValueError):
        stats.aggregate_patients([1], [0.5], ["a"], how="median")


def youden_brute_force(y, s):
    known = ~np.isnan(y)
    return max(binary_metrics(y, s, t)["sensitivity"] + binary_metrics(y, s, t)["specificity"] - 1
               for t in np.unique(s[known]))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_youden_threshold_maximises_j(seed, ties):
    y, s, _ = sample(seed, n=60, ties=ties)
    y[3] = NAN
    t = stats.youden_threshold(y, s)
    m = binary_metrics(y, s, t)
    assert m["sensitivity"] + m["specificity"] - 1 == pytest.approx(youden_brute_force(y, s))
    assert t in s


@pytest.mark.parametrize("y, s, expected", [
    ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 0.8),
    ([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3], 0.3),  # all tied: J = 0 everywhere
    ([1, 1, 1], [0.2, 0.5, 0.9], NAN),  # one class
    ([], [], NAN),
])
def test_youden_threshold_cases(y, s, expected):
    t = stats.youden_threshold(y, s)
    assert (math.isnan(t) and math.isnan(expected)) or t == expected


# ------------------------------------------------------------------------------ inconsistency

@pytest.mark.parametrize("parent, child, threshold, hard, soft, n", [
    ([0.9, 0.3, 0.2, 0.6], [0.7, 0.6, 0.1, 0.65], 0.5, 1, 2, 4),
    ([0.4, 0.4, 0.5], [0.5, 0.4, 0.9], 0.5, 1, 2, 3),  # child == threshold counts; parent == t not
    ([0.1, NAN, 0.2], [0.9, 0.9, NAN], 0.5, 1, 1, 1),  # NaN rows left out
    ([0.1, 0.2], [0.25, 0.3], 0.2, 1, 2, 2),
    ([], [], 0.5, 0, 0, 0),
])
def test_inconsistency_rates(parent, child, threshold, hard, soft, n):
    r = stats.inconsistency_rates(parent, child, threshold)
    assert (r["hard_count"], r["soft_count"], r["n"]) == (hard, soft, n)
    if n:
        assert r["hard"] == pytest.approx(hard / n) and r["soft"] == pytest.approx(soft / n)
    else:
        assert math.isnan(r["hard"]) and math.isnan(r["soft"])


def test_hierarchy_inconsistency_frame():
    frame = pd.DataFrame({
        "image": list("abcdef"), "patient_id": list("aabbcc"),
        "p_malignancy": [0.9, 0.2, 0.4, 0.8, 0.1, NAN],
        "p_alnm": [0.6, 0.7, 0.45, 0.3, 0.05, 0.9],
        "p_aln_ge_2": [0.7, 0.1, 0.5, 0.2, 0.06, 0.95],
    })
    r = stats.hierarchy_inconsistency(frame, [("malignancy", "alnm"), "alnm>aln_ge_2",
                                              ("malignancy", "aln_ge_2")])
    assert list(r) == ["malignancy>alnm", "alnm>aln_ge_2", "malignancy>aln_ge_2"]
    assert r["malignancy>alnm"] == {"hard": 1 / 5, "soft": 2 / 5, "n": 5, "hard_count": 1,
                                    "soft_count": 2}
    # alnm>aln_ge_2: hard at c (0.45 -> 0.5); soft at a, c, e, f
    assert (r["alnm>aln_ge_2"]["hard_count"], r["alnm>aln_ge_2"]["soft_count"]) == (1, 4)
    assert r["alnm>aln_ge_2"]["n"] == 6
    direct = r["malignancy>aln_ge_2"]
    assert (direct["hard_count"], direct["soft_count"]) == (1, 1)
    assert stats.hierarchy_inconsistency(frame, []) == {}
    assert stats.hierarchy_inconsistency(frame, ["alnm>aln_ge_2"], threshold=0.4)[
        "alnm>aln_ge_2"]["hard_count"] == 0
    with pytest.raises(UsmtlError, match="p_unknown"):
        stats.hierarchy_inconsistency(frame, [("malignancy", "unknown")])


# ------------------------------------------------------------------------------------ repeats

@pytest.mark.parametrize("values", [[0.80, 0.82, 0.79, 0.84, 0.81], [0.5, 0.7],
                                    [0.9, NAN, 0.85, 0.88]])
def test_summarize_repeats_by_hand(values):
    v = [x for x in values if not math.isnan(x)]
    n = len(v)
    mean = sum(v) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    half = sps.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    r = stats.summarize_repeats(values, interval="mean")
    assert r["n"] == n
    assert (r["mean"], r["sd"]) == pytest.approx((mean, sd))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((mean - half, mean + half))
    # the paper's interval, mean ± t * SD, is the default and is always reported
    paper = stats.summarize_repeats(values)
    wide = half * math.sqrt(n)
    assert (paper["ci_low"], paper["ci_high"]) == pytest.approx((mean - wide, mean + wide))
    for d in (r, paper):
        assert (d["paper_low"], d["paper_high"]) == pytest.approx((mean - wide, mean + wide))
        assert (d["mean_ci_low"], d["mean_ci_high"]) == pytest.approx((mean - half, mean + half))


def test_summarize_repeats_clips_to_bounds():
    values = [0.99, 0.70, 0.98]  # wide spread near 1: the raw t-interval passes 1
    raw = stats.summarize_repeats(values)
    clipped = stats.summarize_repeats(values, bounds=(0.0, 1.0))
    assert raw["ci_high"] > 1.0 and clipped["ci_high"] == 1.0
    assert clipped["ci_low"] == raw["ci_low"] and clipped["mean"] == raw["mean"]


@pytest.mark.parametrize("interval", ["paper", "mean"])
@pytest.mark.parametrize("values, n", [([0.8], 1), ([0.8, NAN], 1), ([], 0), ([NAN], 0)])
def test_summarize_repeats_too_few(values, n, interval):
    r = stats.summarize_repeats(values, interval=interval, bounds=(0.0, 1.0))
    assert r["n"] == n
    assert math.isnan(r["sd"]) and math.isnan(r["ci_low"]) and math.isnan(r["ci_high"])
    assert all(math.isnan(r[k]) for k in ("paper_low", "paper_high", "mean_ci_low",
                                          "mean_ci_high"))
    assert (r["mean"] == 0.8) if n else math.isnan(r["mean"])


@pytest.mark.parametrize("d, digits, text", [
    ({"mean": 0.8123, "sd": 0.0211, "ci_low": 0.7861, "ci_high": 0.8379}, 3,
     "0.812 ± 0.021 (0.786-0.838)"),
    ({"mean": 0.8123, "sd": 0.0211, "ci_low": 0.7861, "ci_high": 0.8379}, 2,
     "0.81 ± 0.02 (0.79-0.84)"),
    ({"mean": 0.01, "sd": 0.02, "ci_low": -0.015, "ci_high": 0.035}, 3,
     "0.010 ± 0.020 (-0.015 to 0.035)"),
    ({"mean": 0.8, "sd": NAN, "ci_low": NAN, "ci_high": NAN, "n": 1}, 3, "0.800"),
    ({"mean": NAN, "sd": NAN, "ci_low": NAN, "ci_high": NAN, "n": 0}, 3, "-"),
])
def test_format_mean_sd_ci(d, digits, text):
    assert stats.format_mean_sd_ci(d, digits) == text


@pytest.mark.parametrize("interval, text", [("mean", "0.812 ± 0.019 (0.788-0.836)"),
                                             ("paper", "0.812 ± 0.019 (0.759-0.865)")])
def test_format_summarized_repeats(interval, text):
    values = [0.80, 0.82, 0.79, 0.84, 0.81]
    assert stats.format_mean_sd_ci(stats.summarize_repeats(values, interval=interval)) == text


def test_paired_repeats_test():
    a, b = [0.81, 0.83, 0.80, 0.84, NAN], [0.78, 0.80, 0.79, 0.80, 0.9]
    reference = sps.ttest_rel(a[:4], b[:4])
    r = stats.paired_repeats_test(a, b)
    assert r["n"] == 4 and r["diff"] == pytest.approx(0.0275)
    assert (r["t"], r["p"]) == pytest.approx((reference.statistic, reference.pvalue))


@pytest.mark.parametrize("a, b, n, t, p", [
    ([0.8], [0.7], 1, NAN, NAN),
    ([0.8, NAN], [0.7, 0.6], 1, NAN, NAN),
    ([], [], 0, NAN, NAN),
    ([0.8, 0.7, 0.6], [0.8, 0.7, 0.6], 3, 0.0, 1.0),
    ([0.8, 0.7, 0.6], [0.7, 0.6, 0.5], 3, math.inf, 0.0),
])
def test_paired_repeats_test_edge_cases(a, b, n, t, p):
    r = stats.paired_repeats_test(a, b)
    assert r["n"] == n
    for key, expected in (("t", t), ("p", p)):
        assert (math.isnan(r[key]) and math.isnan(expected)) or r[key] == pytest.approx(expected)


def with_mean_sd(mean, sd, n=5):
    """n values whose mean and sample SD (ddof=1) are exactly ``mean`` and ``sd``."""
    x = np.arange(1.0, n + 1) ** 1.5  # any non-constant numbers
    return mean + sd * (x - x.mean()) / x.std(ddof=1)


def test_with_mean_sd_helper():
    v = with_mean_sd(0.836, 0.011)
    assert len(v) == 5 and v.mean() == pytest.approx(0.836, abs=1e-12)
    assert v.std(ddof=1) == pytest.approx(0.011, abs=1e-12)


def test_summarize_repeats_reproduces_paper_table_3():
    """Li, Guo et al. 2022, Table 3: "0.836 ± 0.011 (0.805-0.866)" over 5 repeats."""
    values = with_mean_sd(0.836, 0.011)
    paper = stats.summarize_repeats(values, interval="paper")
    assert paper["ci_low"] == pytest.approx(0.805, abs=0.0015)
    assert paper["ci_high"] == pytest.approx(0.866, abs=0.0015)
    assert stats.format_mean_sd_ci(paper) == "0.836 ± 0.011 (0.805-0.867)"  # their SD is rounded
    # the CI of the mean is sqrt(5) times narrower and would not print as in the paper
    mean = stats.summarize_repeats(values, interval="mean")
    half = 2.776 * 0.011 / math.sqrt(5)
    assert mean["ci_low"] == pytest.approx(0.836 - half, abs=1e-4)
    assert mean["ci_high"] == pytest.approx(0.836 + half, abs=1e-4)
    assert (mean["paper_low"], mean["paper_high"]) == (paper["ci_low"], paper["ci_high"])


@pytest.mark.parametrize("interval", ["paper", "mean"])
def test_summarize_repeats_clips_both_intervals(interval):
    values = [0.99, 0.70, 0.98, 0.97]  # near 1: both t-intervals pass 1
    raw = stats.summarize_repeats(values, interval=interval)
    clipped = stats.summarize_repeats(values, interval=interval, bounds=(0.0, 1.0))
    assert raw["paper_high"] > 1.0 and raw["mean_ci_high"] > 1.0
    assert clipped["paper_high"] == 1.0 and clipped["mean_ci_high"] == 1.0
    assert clipped["paper_low"] == raw["paper_low"] > 0.0
    assert clipped["mean_ci_low"] == raw["mean_ci_low"] > 0.0
    assert clipped["ci_high"] == 1.0 and clipped["ci_low"] == raw["ci_low"]
    low = stats.summarize_repeats([0.01, 0.30, 0.02, 0.03], interval=interval,
                                  bounds=(0.0, 1.0))
    assert low["paper_low"] == 0.0 and low["mean_ci_low"] == 0.0 and low["ci_low"] == 0.0


@pytest.mark.parametrize("interval", ["Paper", "ci", "", None])
def test_summarize_repeats_unknown_interval(interval):
    with pytest.raises(UsmtlError, match=re.escape(f"Received: {interval!r}") + "$"):
        stats.summarize_repeats([0.8, 0.9], interval=interval)


@pytest.mark.parametrize("m1, s1, m2, s2", [
    (0.836, 0.011, 0.812, 0.015),
    (0.812, 0.019, 0.836, 0.011),
    (0.70, 0.05, 0.70, 0.02),
    (0.91, 0.004, 0.85, 0.03),
])
def test_unpaired_repeats_test_matches_scipy_from_stats(m1, s1, m2, s2):
    r = stats.unpaired_repeats_test(with_mean_sd(m1, s1), with_mean_sd(m2, s2)[::-1])
    reference = sps.ttest_ind_from_stats(m1, s1, 5, m2, s2, 5)
    assert (r["n_a"], r["n_b"]) == (5, 5)
    assert r["diff"] == pytest.approx(m1 - m2, abs=1e-12)
    assert r["t"] == pytest.approx(reference.statistic, abs=1e-9)
    assert r["p"] == pytest.approx(reference.pvalue, abs=1e-9)


def test_unpaired_and_paired_tests_differ():
    """B tracks A repeat by repeat: the paired test sees a consistent gain, the unpaired
    test only a small difference against a large run-to-run spread."""
    a = [0.70, 0.75, 0.80, 0.85, 0.90]
    b = [0.69, 0.73, 0.79, 0.84, 0.88]
    unpaired, paired = stats.unpaired_repeats_test(a, b), stats.paired_repeats_test(a, b)
    # by hand: pooled variance (0.025 + 0.0237) / 8, t = 0.014 / sqrt(var * (1/5 + 1/5))
    pooled = (sum((x - 0.80) ** 2 for x in a) + sum((x - 0.786) ** 2 for x in b)) / 8
    t = 0.014 / math.sqrt(pooled * 2 / 5)
    assert unpaired["diff"] == pytest.approx(0.014) == pytest.approx(paired["diff"])
    assert unpaired["t"] == pytest.approx(t) == pytest.approx(0.2825, abs=1e-4)
    assert unpaired["p"] == pytest.approx(2 * sps.t.sf(t, 8)) == pytest.approx(0.7847, abs=1e-4)
    assert paired["t"] == pytest.approx(5.7155, abs=1e-4)
    assert paired["p"] == pytest.approx(0.0046, abs=1e-4)
    assert unpaired["p"] > 0.5 > 0.01 > paired["p"]


def test_unpaired_repeats_test_drops_nan_per_side():
    a, b = [0.81, NAN, 0.83, 0.80, 0.84], [0.78, 0.80, 0.79, NAN, NAN, 0.80, 0.77]
    reference = sps.ttest_ind([0.81, 0.83, 0.80, 0.84], [0.78, 0.80, 0.79, 0.80, 0.77])
    r = stats.unpaired_repeats_test(a, b)
    assert (r["n_a"], r["n_b"]) == (4, 5)
    assert r["diff"] == pytest.approx(0.82 - 0.788)
    assert (r["t"], r["p"]) == pytest.approx((reference.statistic, reference.pvalue))


@pytest.mark.parametrize("a, b, n_a, n_b, diff, t, p", [
    ([0.8], [0.7, 0.6], 1, 2, 0.15, NAN, NAN),
    ([0.8, NAN], [0.7, 0.6, 0.5], 1, 3, 0.2, NAN, NAN),
    ([0.8, 0.7], [NAN, 0.6], 2, 1, 0.15, NAN, NAN),
    ([], [0.7, 0.6], 0, 2, NAN, NAN, NAN),
    ([NAN], [], 0, 0, NAN, NAN, NAN),
    ([0.7, 0.7, 0.7], [0.7, 0.7], 3, 2, 0.0, 0.0, 1.0),
    ([0.8, 0.8, 0.8], [0.7, 0.7, 0.7], 3, 3, 0.1, math.inf, 0.0),
    ([0.6, 0.6], [0.7, 0.7, NAN, 0.7], 2, 3, -0.1, -math.inf, 0.0),
    # one constant side: the pooled SD comes from the other, an ordinary test
    ([0.7, 0.7, 0.7], [0.6, 0.65, 0.7], 3, 3, 0.05, math.sqrt(3), 0.1583024),
])
def test_unpaired_repeats_test_edge_cases(a, b, n_a, n_b, diff, t, p):
    r = stats.unpaired_repeats_test(a, b)
    assert (r["n_a"], r["n_b"]) == (n_a, n_b)
    for key, expected in (("diff", diff), ("t", t), ("p", p)):
        assert ((math.isnan(r[key]) and math.isnan(expected))
                or r[key] == pytest.approx(expected, abs=1e-7)), key


def test_docstring_examples_run():
    result = doctest.testmod(stats, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 10 and result.failed == 0
