"""Binary metrics against scikit-learn, and the prediction file's hierarchy flags."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score, precision_score,
                             recall_score, roc_auc_score)

from usmtl.evaluation.metrics import METRICS, binary_metrics, format_table, roc_auc
from usmtl.evaluation.predictions import (predictions_frame, prediction_tasks, read_predictions,
                                          violations)
from usmtl.errors import UsmtlError


def sample(seed, n=200, positive_rate=0.35):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < positive_rate).astype(float)
    score = np.clip(0.35 * y + rng.normal(0.35, 0.2, n), 0, 1)
    return y, score


def sklearn_metrics(y, score, threshold):
    pred = (score >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return {
        "auc": roc_auc_score(y, score),
        "accuracy": accuracy_score(y, pred),
        "sensitivity": recall_score(y, pred, zero_division=np.nan),
        "specificity": tn / (tn + fp) if tn + fp else math.nan,
        "precision": precision_score(y, pred, zero_division=np.nan),
        "f1": f1_score(y, pred, zero_division=np.nan),
        "tp": tp, "tn": tn, "fp": fp, "fn": fn,
    }


def assert_close(ours, theirs):
    for key, value in theirs.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(value, abs=1e-12), key


@pytest.mark.parametrize("threshold", [0.1, 0.3, 0.5, 0.62, 0.9])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_sklearn(seed, threshold):
    y, score = sample(seed)
    ours = binary_metrics(y, score, threshold)
    assert_close(ours, sklearn_metrics(y, score, threshold))
    assert ours["n"] == len(y)
    assert ours["positives"] == int(y.sum())
    assert ours["threshold"] == threshold
    assert set(METRICS) <= set(ours)


@pytest.mark.parametrize("threshold", [0.0, 1.01])
def test_extreme_thresholds(threshold):
    y, score = sample(3)
    ours = binary_metrics(y, score, threshold)
    assert_close(ours, sklearn_metrics(y, score, threshold))
    if threshold == 0.0:  # all predicted positive
        assert ours["sensitivity"] == 1.0 and ours["specificity"] == 0.0
    else:  # none predicted positive: precision undefined
        assert math.isnan(ours["precision"]) and ours["sensitivity"] == 0.0


def test_threshold_is_inclusive():
    m = binary_metrics([1, 0], [0.5, 0.49], threshold=0.5)
    assert (m["tp"], m["tn"], m["fp"], m["fn"]) == (1, 1, 0, 0)


@pytest.mark.parametrize("seed", [0, 4])
def test_nan_labels_are_ignored(seed):
    y, score = sample(seed)
    rng = np.random.default_rng(seed + 10)
    y_unknown = y.copy()
    hidden = rng.random(len(y)) < 0.3
    y_unknown[hidden] = np.nan
    ours = binary_metrics(y_unknown, score, 0.5)
    assert ours["n"] == int((~hidden).sum())
    assert_close(ours, sklearn_metrics(y[~hidden], score[~hidden], 0.5))


def test_a_nan_score_for_a_known_label_is_refused():
    """As scikit-learn refuses it: a metric silently computed on fewer images is wrong."""
    y = np.array([1, 0, 1, 0, 1.0])
    score = np.array([0.9, 0.1, np.nan, 0.8, 0.2])
    with pytest.raises(ValueError, match="y_score contains NaN for 1 sample.*index 2"):
        binary_metrics(y, score)
    ours = binary_metrics(np.where(np.isnan(score), np.nan, y), score)  # that label unknown
    assert ours["n"] == 4
    assert_close(ours, sklearn_metrics(y[[0, 1, 3, 4]], score[[0, 1, 3, 4]], 0.5))


@pytest.mark.parametrize("y, score", [
    ([1, 1, 1], [0.2, 0.6, 0.9]),
    ([0, 0, 0, 0], [0.2, 0.6, 0.9, 0.1]),
    ([1, np.nan, 1], [0.2, 0.6, 0.9]),
    ([0, np.nan], [0.3, 0.7]),
])
def test_one_class_only(y, score):
    m = binary_metrics(y, score)
    assert math.isnan(m["auc"])
    assert m["n"] == int(np.sum(~np.isnan(y)))
    assert not math.isnan(m["accuracy"])
    if m["positives"] == 0:
        assert math.isnan(m["sensitivity"])
        assert not math.isnan(m["specificity"])
    else:
        assert math.isnan(m["specificity"])
        assert not math.isnan(m["sensitivity"])


@pytest.mark.parametrize("y, score", [
    ([], []),
    ([np.nan, np.nan], [0.2, 0.8]),
    ([np.nan, np.nan], [np.nan, np.nan]),
])
def test_empty(y, score):
    m = binary_metrics(np.array(y, float), np.array(score, float))
    assert m["n"] == 0 and m["positives"] == 0
    for key in METRICS:
        assert math.isnan(m[key]), key
    assert (m["tp"], m["tn"], m["fp"], m["fn"]) == (0, 0, 0, 0)


def test_length_mismatch():
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        binary_metrics([0, 1, 1], [0.2, 0.3])


def test_column_vectors_are_accepted():
    y, score = sample(5, n=50)
    assert binary_metrics(y[:, None], score[:, None])["auc"] == pytest.approx(
        roc_auc_score(y, score))


@pytest.mark.parametrize("y, score, expected", [
    ([0, 1], [0.5, 0.5], 0.5),                       # all tied
    ([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.9], 0.875),     # one tied pair counts half
    ([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], 0.75),
    ([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4], 0.0),       # perfectly wrong
    ([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], 1.0),
])
def test_auc_ties(y, score, expected):
    assert roc_auc(y, score) == pytest.approx(expected)
    assert roc_auc(y, score) == pytest.approx(roc_auc_score(y, score))


@pytest.mark.parametrize("seed", range(4))
def test_auc_with_many_ties_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300).astype(float)
    score = np.round(rng.random(300) * 0.5 + 0.3 * y, 1)  # a handful of distinct values
    assert roc_auc(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert binary_metrics(y, score)["auc"] == pytest.approx(roc_auc_score(y, score), abs=1e-12)


def test_format_table():
    rows = {"malignancy": binary_metrics([0, 1, 1], [0.1, 0.8, 0.4]),
            "alnm": binary_metrics([np.nan], [0.3])}
    lines = format_table(rows).splitlines()
    assert lines[0].split()[:4] == ["task", "n", "positives", "auc"]
    assert lines[1].split()[:4] == ["malignancy", "3", "2", "1.000"]
    assert lines[2].split()[:4] == ["alnm", "0", "0", "-"]
    assert len({len(line) for line in lines}) == 1  # fixed width


def test_format_table_scores_no_task_with_one_class():
    rows = {"malignancy": binary_metrics([0, 1, 1], [0.1, 0.8, 0.4]),
            "aln_ge_4": binary_metrics([0, 0], [0.7, 0.8])}
    lines = format_table(rows).splitlines()
    assert lines[2].split() == ["aln_ge_4", "2", "0"] + ["-"] * len(METRICS)
    assert lines[3] == "-: not estimable (aln_ge_4: no positive case among 2 images)"


# ---------------------------------------------------------------------------------------
# The prediction file
# ---------------------------------------------------------------------------------------

EDGES = [("malignancy", "alnm"), ("alnm", "aln_ge_2")]


@pytest.fixture
def frame():
    probabilities = {
        "malignancy": np.array([0.9, 0.3, 0.2, 0.6, 0.5, 0.4]),
        "alnm": np.array([0.7, 0.8, 0.1, 0.4, 0.5, 0.45]),
        "aln_ge_2": np.array([[0.2], [0.9], [0.05], [0.55], [0.1], [0.3]]),  # (n, 1) raveled
    }
    labels = {"malignancy": np.array([1, 0, 0, 1, np.nan, 1]),
              "alnm": np.array([1, 0, np.nan, 0, np.nan, 0])}
    return predictions_frame([f"{i}.png" for i in range(6)], ["a", "a", "b", "c", "d", "e"],
                             ["test"] * 6, probabilities, labels, EDGES)


def test_prediction_columns(frame):
    assert list(frame.columns) == [
        "image", "patient_id", "split", "p_malignancy", "y_malignancy", "p_alnm", "y_alnm",
        "p_aln_ge_2", "hierarchy_violation", "violated_edges", "hierarchy_excess"]
    assert prediction_tasks(frame) == ["malignancy", "alnm", "aln_ge_2"]
    assert frame["y_malignancy"].isna().tolist() == [False, False, False, False, True, False]
    assert frame["p_aln_ge_2"].tolist() == [0.2, 0.9, 0.05, 0.55, 0.1, 0.3]


def test_hierarchy_flags(frame):
    # row 0: consistent; row 1: child 0.8 >= 0.5 while parent 0.3 < 0.5, and 0.9 below it;
    # row 2: all negative; row 3: aln_ge_2 positive under a negative alnm;
    # row 4: everything at exactly 0.5 or below: no hard violation;
    # row 5: child above parent (0.45 > 0.4) but both negative: soft excess only.
    assert frame["hierarchy_violation"].tolist() == [0, 1, 0, 1, 0, 0]
    assert frame["violated_edges"].tolist() == ["", "malignancy>alnm", "", "alnm>aln_ge_2", "",
                                                ""]
    np.testing.assert_allclose(frame["hierarchy_excess"],
                               [-0.2, 0.5, -0.05, 0.15, 0.0, 0.05], atol=1e-12)


def test_both_edges_violated():
    flags, which, excess = violations({"a": np.array([0.1]), "b": np.array([0.4]),
                                       "c": np.array([0.9])}, [("a", "b"), ("b", "c")])
    assert flags.tolist() == [True] and which == ["b>c"]
    flags, which, _ = violations({"a": np.array([0.1]), "b": np.array([0.6]),
                                  "c": np.array([0.7])}, [("a", "b"), ("a", "c")])
    assert which == ["a>b;a>c"]
    np.testing.assert_allclose(excess, [0.5])


@pytest.mark.parametrize("threshold, flagged", [(0.5, [True]), (0.3, [False]), (0.9, [False])])
def test_violation_threshold(threshold, flagged):
    flags, _, excess = violations({"p": np.array([0.35]), "c": np.array([0.8])}, [("p", "c")],
                                  threshold)
    assert flags.tolist() == flagged
    np.testing.assert_allclose(excess, [0.45])


def test_no_edges_and_missing_tasks():
    probabilities = {"malignancy": np.array([0.2, 0.9])}
    for edges in ([], [("malignancy", "alnm")]):
        frame = predictions_frame(["a", "b"], ["1", "2"], ["val", "val"], probabilities, None,
                                  edges)
        assert frame["hierarchy_violation"].tolist() == [0, 0]
        assert frame["violated_edges"].tolist() == ["", ""]
        assert frame["hierarchy_excess"].isna().all()
        assert "y_malignancy" not in frame


def test_empty_prediction_frame():
    frame = predictions_frame([], [], [], {"malignancy": np.array([])}, None, [])
    assert len(frame) == 0 and "hierarchy_violation" in frame


def test_prediction_file_round_trip(tmp_path, frame):
    path = tmp_path / "predictions.csv"
    frame.to_csv(path, index=False)
    again = read_predictions(str(path))
    assert prediction_tasks(again) == prediction_tasks(frame)
    assert again["patient_id"].tolist() == ["a", "a", "b", "c", "d", "e"]
    pd.testing.assert_series_equal(again["hierarchy_violation"], frame["hierarchy_violation"])


@pytest.mark.parametrize("text", ["image,patient_id\na.png,1\n", "x,p_a\n1,0.5\n"])
def test_read_predictions_needs_columns(tmp_path, text):
    path = tmp_path / "p.csv"
    path.write_text(text)
    with pytest.raises(UsmtlError, match="needs image, patient_id and p_<task>"):
        read_predictions(str(path))


def test_read_predictions_missing_file(tmp_path):
    with pytest.raises(UsmtlError, match="cannot read"):
        read_predictions(str(tmp_path / "none.csv"))
