"""Calibration measures against independent references: scikit-learn's Brier score,
statsmodels' logistic GLM for the calibration intercept and slope, np.histogram for the ECE."""

import math

import numpy as np
import pytest

from usmtl.errors import UsmtlError
from usmtl.evaluation.calibration import (brier_score, calibration_intercept_slope,
                                          calibration_metrics, expected_calibration_error,
                                          plot_reliability, reliability_curve)


def _logit(p):
    return np.log(p / (1 - p))


def _miscalibrated(n=3000, seed=0):
    """Scores p, and outcomes drawn with the true logit 0.5 + 0.6 * logit(p): the model
    underestimates the risk on average and its scores are too extreme."""
    rng = np.random.default_rng(seed)
    p = 1 / (1 + np.exp(-rng.normal(0, 2, n)))
    truth = 1 / (1 + np.exp(-(0.5 + 0.6 * _logit(p))))
    y = (rng.random(n) < truth).astype(float)
    return y, p


def test_brier_matches_sklearn():
    from sklearn.metrics import brier_score_loss

    y, p = _miscalibrated(500)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    y_unknown = y.copy()
    y_unknown[::7] = np.nan  # unknown labels are dropped
    known = ~np.isnan(y_unknown)
    assert brier_score(y_unknown, p) == pytest.approx(brier_score_loss(y[known], p[known]),
                                                      abs=1e-12)


def test_intercept_and_slope_match_statsmodels():
    import statsmodels.api as sm

    y, p = _miscalibrated()
    lp = _logit(p)
    intercept, slope = calibration_intercept_slope(y, p)
    binomial = sm.families.Binomial()
    # slope: coefficient of logit(p) in y ~ a + b * logit(p)
    full = sm.GLM(y, sm.add_constant(lp), family=binomial).fit()
    # intercept: y ~ 1 with logit(p) as offset (calibration-in-the-large)
    offset = sm.GLM(y, np.ones((len(y), 1)), family=binomial, offset=lp).fit()
    assert slope == pytest.approx(full.params[1], abs=1e-7)
    assert intercept == pytest.approx(offset.params[0], abs=1e-7)
    # and they recover the simulated miscalibration
    assert slope == pytest.approx(0.6, abs=0.1)
    assert intercept > 0.2


def test_ece_matches_a_direct_histogram_computation():
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.random(300), [0.0, 0.1, 0.3, 0.7, 1.0]])  # edges included
    y = (rng.random(len(p)) < p).astype(float)
    edges = np.linspace(0, 1, 11)
    count, _ = np.histogram(p, bins=edges)
    sum_p, _ = np.histogram(p, bins=edges, weights=p)
    sum_y, _ = np.histogram(p, bins=edges, weights=y)
    filled = count > 0
    expected = np.sum(count[filled] / len(p)
                      * np.abs(sum_p[filled] / count[filled] - sum_y[filled] / count[filled]))
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(expected, abs=1e-12)
    curve = reliability_curve(y, p, n_bins=10)
    np.testing.assert_array_equal(curve["count"], count)
    np.testing.assert_allclose(curve["mean_score"][filled], (sum_p / np.maximum(count, 1))[filled])
    np.testing.assert_allclose(curve["observed"][filled], (sum_y / np.maximum(count, 1))[filled])
    assert curve["mean_score"][~filled].isna().all()


def test_calibration_metrics_resample_patients():
    from usmtl.evaluation.stats import patient_bootstrap_ci

    y, p = _miscalibrated(200, seed=2)
    patients = np.repeat(np.arange(100), 2)  # two images per patient
    result = calibration_metrics(y, p, patients, n_boot=100, seed=3)
    assert set(result) == {"brier", "ece", "intercept", "slope"}
    for name, value in result.items():
        assert value["ci_low"] <= value["value"] <= value["ci_high"], name
    # the CI is the patient bootstrap's, same seed, same resamples
    assert (result["brier"]["ci_low"], result["brier"]["ci_high"]) == pytest.approx(
        patient_bootstrap_ci(y, p, patients, brier_score, 100, 3))
    again = calibration_metrics(y, p, patients, n_boot=100, seed=3)
    assert again == result
    assert math.isnan(calibration_metrics(y, p, patients, n_boot=0)["slope"]["ci_low"])


@pytest.mark.parametrize("case", ["one class", "nan labels", "saturated scores", "empty"])
def test_edge_cases(case):
    if case == "one class":
        y, p = np.ones(6), np.linspace(0.2, 0.9, 6)
        intercept, slope = calibration_intercept_slope(y, p)
        assert math.isnan(intercept) and math.isnan(slope)
        assert brier_score(y, p) == pytest.approx(np.mean((p - 1) ** 2))
        result = calibration_metrics(y, p, None, n_boot=20)
        assert math.isnan(result["slope"]["value"]) and math.isnan(result["slope"]["ci_low"])
    elif case == "nan labels":
        y, p = _miscalibrated(300, seed=4)
        y_unknown = np.concatenate([y, [np.nan] * 5])
        p_more = np.concatenate([p, [0.99] * 5])
        assert calibration_intercept_slope(y_unknown, p_more) == calibration_intercept_slope(y, p)
        assert expected_calibration_error(y_unknown, p_more) == expected_calibration_error(y, p)
    elif case == "saturated scores":
        # a float32 sigmoid gives exactly 0 and 1: clipped, the logit stays finite
        y = np.array([0, 0, 1, 1, 0, 1, 1, 0], float)
        p = np.array([0.0, 0.2, 1.0, 0.7, 0.6, 0.4, 0.9, 0.1])
        intercept, slope = calibration_intercept_slope(y, p)
        assert np.isfinite(intercept) and np.isfinite(slope)
    else:
        assert math.isnan(brier_score([], []))
        assert math.isnan(expected_calibration_error([np.nan], [0.5]))
        assert reliability_curve([], [], n_bins=4)["count"].sum() == 0


@pytest.mark.parametrize("y, p, match", [
    ([0, 2], [0.1, 0.2], "Labels must be 0, 1 or NaN .*Received: \\[2.0\\]"),
    ([0, 1], [0.1, 1.5], "Scores must be probabilities .*Received: \\[1.5\\]"),
    ([0, 1], [0.1], "differ in length. Received: 2 and 1"),
])
def test_bad_input_is_refused(y, p, match):
    with pytest.raises(UsmtlError, match=match):
        brier_score(y, p)


def test_bad_bins_are_refused():
    with pytest.raises(UsmtlError, match="n_bins must be a positive integer. Received: 0"):
        expected_calibration_error([0, 1], [0.2, 0.8], n_bins=0)


def test_reliability_diagram_is_written(tmp_path):
    import pandas as pd

    y, p = _miscalibrated(100, seed=5)
    frame = pd.DataFrame({"p_malignancy": p, "y_malignancy": y, "p_alnm": p,
                          "y_alnm": np.ones(100)})  # one class: no diagram
    paths = plot_reliability(frame, str(tmp_path))
    assert paths == [str(tmp_path / "reliability_malignancy.png")]
    assert (tmp_path / "reliability_malignancy.png").stat().st_size > 1000


def test_evaluate_reports_calibration_and_refuses_scores_that_are_not_probabilities():
    import pandas as pd

    from usmtl.evaluation.evaluate import evaluate_predictions
    from usmtl.evaluation.tables import calibration_rows

    y, p = _miscalibrated(80, seed=6)
    frame = pd.DataFrame({"image": [f"i{k}" for k in range(80)],
                          "patient_id": [f"p{k // 2}" for k in range(80)],
                          "p_malignancy": p, "y_malignancy": y})
    report = evaluate_predictions(frame, n_boot=20)
    calibration = report["tasks"]["malignancy"]["calibration"]
    assert calibration["slope"]["value"] == calibration_intercept_slope(y, p)[1]
    rows = calibration_rows(report)
    assert rows["metric"].tolist() == ["brier", "ece", "intercept", "slope"]
    frame["p_malignancy"] = 3 * p  # a logit or score, not a probability
    with pytest.raises(UsmtlError, match="'malignancy': p_malignancy must hold probabilities"):
        evaluate_predictions(frame, n_boot=0)
