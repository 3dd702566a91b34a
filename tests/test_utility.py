"""Decision curves and operating points on hand-made examples whose answers are counted by
hand below."""

import math

import numpy as np
import pandas as pd
import pytest

from usmtl.errors import UsmtlError
from usmtl.evaluation.metrics import binary_metrics
from usmtl.evaluation.utility import (decision_curve, net_benefit, operating_points,
                                      plot_decision_curves, threshold_for_sensitivity,
                                      threshold_for_specificity)

# Ten images: 4 positives, 6 negatives (prevalence 0.4).
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], float)
P = np.array([0.9, 0.7, 0.4, 0.15, 0.8, 0.35, 0.3, 0.2, 0.1, 0.05])


def test_net_benefit_by_hand():
    # pt 0.10: score >= 0.10 -> positives 0.9 0.7 0.4 0.15 (TP 4), negatives 0.8 0.35 0.3 0.2
    #          0.1 (FP 5): 4/10 - 5/10 * 0.1/0.9 = 0.4 - 0.0556 = 0.3444
    # pt 0.25: TP 3 (0.9 0.7 0.4), FP 3 (0.8 0.35 0.3): 3/10 - 3/10 * 0.25/0.75 = 0.3 - 0.1 = 0.2
    # pt 0.50: TP 2 (0.9 0.7), FP 1 (0.8): 2/10 - 1/10 * 1 = 0.1
    # pt 0.85: TP 1 (0.9), FP 0: 1/10 = 0.1
    expected = [0.4 - 0.5 / 9, 0.2, 0.1, 0.1]
    np.testing.assert_allclose(net_benefit(Y, P, [0.10, 0.25, 0.50, 0.85]), expected)
    # unknown labels are dropped: n stays 10
    y = np.concatenate([Y, [np.nan, np.nan]])
    p = np.concatenate([P, [0.95, 0.6]])
    np.testing.assert_allclose(net_benefit(y, p, [0.10, 0.25, 0.50, 0.85]), expected)


def test_treat_all_and_default_thresholds():
    curve = decision_curve(Y, P)
    assert list(curve.columns) == ["threshold", "model", "treat_all", "treat_none"]
    assert len(curve) == 99
    assert curve["threshold"].iloc[0] == 0.01 and curve["threshold"].iloc[-1] == 0.99
    pt = curve["threshold"].to_numpy()
    # treat all = prevalence - (1 - prevalence) * pt / (1 - pt), prevalence 4/10
    np.testing.assert_allclose(curve["treat_all"], 0.4 - 0.6 * pt / (1 - pt))
    assert (curve["treat_none"] == 0).all()
    at = curve.set_index(curve["threshold"].round(2))
    assert at.loc[0.25, "treat_all"] == pytest.approx(0.2)  # 0.4 - 0.6/3
    assert at.loc[0.50, "treat_all"] == pytest.approx(-0.2)
    assert at.loc[0.25, "model"] == pytest.approx(0.2)


@pytest.mark.parametrize("thresholds", [[0.0, 0.5], [0.5, 1.0], [1.2]])
def test_thresholds_outside_0_1_are_refused(thresholds):
    with pytest.raises(UsmtlError, match="strictly between 0 and 1. Received"):
        net_benefit(Y, P, thresholds)


def test_operating_point_thresholds_by_hand():
    # positives sorted: 0.9 0.7 0.4 0.15; negatives sorted: 0.05 0.1 0.2 0.3 0.35 0.8
    # sensitivity >= 0.75 needs 3 of 4 positives >= t: largest t = 3rd positive, 0.4
    assert threshold_for_sensitivity(Y, P, 0.75) == 0.4
    # sensitivity >= 0.90 needs all 4: t = 0.15
    assert threshold_for_sensitivity(Y, P, 0.90) == 0.15
    # specificity >= 0.80 needs 5 of 6 negatives < t: t > 0.35, smallest observed score 0.4
    assert threshold_for_specificity(Y, P, 0.80) == 0.4
    # specificity >= 0.50 needs 3 negatives < t: t > 0.2, smallest observed 0.3
    assert threshold_for_specificity(Y, P, 0.50) == 0.3
    # specificity 1: every negative < t: t > 0.8, the positive 0.9
    assert threshold_for_specificity(Y, P, 1.0) == 0.9
    # a negative on top: nothing observed clears all negatives, just above the top score
    top = threshold_for_specificity([1, 0, 0], [0.5, 0.2, 0.95], 1.0)
    assert top > 0.95 and top == np.nextafter(0.95, 1)
    # thresholds are applied as binary_metrics does (score >= t is positive)
    assert binary_metrics(Y, P, 0.4)["sensitivity"] == 0.75
    assert binary_metrics(Y, P, 0.4)["specificity"] == pytest.approx(5 / 6)


@pytest.mark.parametrize("y, p, target", [
    ([1, 1, 1], [0.2, 0.5, 0.9], 0.9),        # one class
    ([np.nan, 1, np.nan], [0.2, 0.5, 0.9], 0.9),  # one class once NaN labels are dropped
    ([], [], 0.9),                             # nothing
])
def test_no_threshold_without_both_classes(y, p, target):
    assert math.isnan(threshold_for_sensitivity(y, p, target))
    assert math.isnan(threshold_for_specificity(y, p, target))


@pytest.mark.parametrize("target", [0, 1.5, -0.1, "high"])
def test_bad_targets_are_refused(target):
    with pytest.raises(UsmtlError, match="in \\(0, 1\\]. Received"):
        threshold_for_sensitivity(Y, P, target)


def test_threshold_chosen_on_validation_is_applied_to_test():
    rng = np.random.default_rng(0)
    val_y = (np.arange(60) % 2).astype(float)
    val_p = np.clip(0.3 * val_y + 0.7 * rng.random(60), 0, 1)
    test_y = (np.arange(80) % 2).astype(float)
    test_p = np.clip(0.25 * test_y + 0.75 * rng.random(80), 0, 1)
    patients = np.repeat(np.arange(40), 2)
    points = operating_points(test_y, test_p, patients, val_y, val_p, targets=(0.90, 0.95),
                              n_boot=50, seed=1)
    assert [d["rule"] for d in points] == ["sensitivity >= 0.90", "sensitivity >= 0.95",
                                           "specificity >= 0.90", "specificity >= 0.95"]
    for point in points:
        assert point["chosen_on"] == "validation"
        choose = (threshold_for_sensitivity if point["criterion"] == "sensitivity"
                  else threshold_for_specificity)
        t = choose(val_y, val_p, point["target"])
        assert point["threshold"] == t
        assert t != choose(test_y, test_p, point["target"])  # the test's own would differ
        expected = binary_metrics(test_y, test_p, t)
        assert point["sensitivity"]["value"] == pytest.approx(expected["sensitivity"])
        assert point["specificity"]["value"] == pytest.approx(expected["specificity"])
        assert point["ppv"]["value"] == pytest.approx(expected["precision"])
        npv = expected["tn"] / (expected["tn"] + expected["fn"])
        assert point["npv"]["value"] == pytest.approx(npv)
        for measure in ("sensitivity", "specificity", "ppv", "npv"):
            v = point[measure]
            assert v["ci_low"] <= v["value"] <= v["ci_high"], (point["rule"], measure)
    # on validation, the rule holds
    assert binary_metrics(val_y, val_p, points[0]["threshold"])["sensitivity"] >= 0.90


def test_operating_points_without_validation_are_marked_optimistic():
    points = operating_points(Y, P, None, targets=(0.75,), n_boot=0)
    assert all(d["chosen_on"] == "test (optimistic: no validation predictions)" for d in points)
    sens, spec = points
    assert sens["threshold"] == 0.4 and sens["sensitivity"]["value"] == 0.75
    # 0.4: called negative 0.35 0.3 0.2 0.15 0.1 0.05 -> 5 true negatives of 6: NPV 5/6
    assert sens["npv"]["value"] == pytest.approx(5 / 6)
    # specificity >= 0.75 needs 4.5, so 5, of 6 negatives < t: t > 0.35, observed 0.4
    assert spec["rule"] == "specificity >= 0.75" and spec["threshold"] == 0.4
    with pytest.raises(UsmtlError, match="come together"):
        operating_points(Y, P, None, val_y=Y)


def test_validation_with_one_class_gives_no_threshold():
    points = operating_points(Y, P, None, val_y=[1, 1], val_p=[0.4, 0.6], n_boot=10)
    assert all(math.isnan(d["threshold"]) and math.isnan(d["sensitivity"]["value"])
               for d in points)


def test_decision_curve_plot_is_written(tmp_path):
    frame = pd.DataFrame({"p_malignancy": P, "y_malignancy": Y})
    paths = plot_decision_curves(frame, str(tmp_path))
    assert paths == [str(tmp_path / "decision_curve_malignancy.png")]
    assert (tmp_path / "decision_curve_malignancy.png").stat().st_size > 1000
