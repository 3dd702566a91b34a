"""Tests of the synthetic phantom generator: files, labels and that the labels can be learnt.

The phantoms are synthetic images, not real patient data (see :mod:`usmtl.data.phantoms`).
"""

import cv2
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from usmtl.data.manifest import check_manifest, read_manifest
from usmtl.data.phantoms import make_phantoms


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """A 200-patient set, the size the thresholds below were measured on."""
    out = tmp_path_factory.mktemp("phantoms")
    frame = make_phantoms(out, n_patients=200, seed=0, progress=False)
    return out, frame


def test_same_seed_gives_the_same_bytes(tmp_path):
    a = make_phantoms(tmp_path / "a", n_patients=8, seed=3, progress=False)
    b = make_phantoms(tmp_path / "b", n_patients=8, seed=3, progress=False)
    pd.testing.assert_frame_equal(a, b)
    for rel in [*a["image"], *a["annotation"], "manifest.csv"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    c = make_phantoms(tmp_path / "c", n_patients=8, seed=4, progress=False)
    first = a["image"][0]
    assert (tmp_path / "a" / first).read_bytes() != (tmp_path / "c" / c["image"][0]).read_bytes()


def test_manifest_is_valid_and_complete(phantoms):
    out, frame = phantoms
    assert check_manifest(str(out / "manifest.csv")) == []
    for column in ("image", "patient_id", "malignant", "alnm", "aln_count", "annotation",
                   "lesion_radius", "irregularity", "center_x", "center_y"):
        assert column in frame.columns, column
    manifest = read_manifest(str(out / "manifest.csv"))
    shapes = []
    for path, box, cx, cy in zip(manifest.image_paths(), manifest.boxes(),
                                 frame["center_x"], frame["center_y"]):
        image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        assert image.dtype == np.uint8 and image.ndim == 2
        shapes.append(image.shape)
        assert box.x_min <= cx < box.x_max and box.y_min <= cy < box.y_max
        assert box.width < image.shape[1] and box.height < image.shape[0]
    heights, widths = np.array(shapes).T
    assert heights.min() >= 0.85 * 160 - 1 and heights.max() <= 1.15 * 160 + 1
    assert len(set(shapes)) > 10
    # The lesion moves around the frame, so cropping the RoI matters.
    assert frame["center_x"].std() > 10 and frame["center_y"].std() > 5


def test_labels_follow_the_generative_model(phantoms):
    out, frame = phantoms
    # As in the paper's data: ALN labels for malignant masses only, empty for benign ones.
    benign = frame["malignant"] == 0
    assert frame.loc[benign, ["alnm", "aln_count"]].isna().all().all()
    assert frame.loc[~benign, ["alnm", "aln_count"]].notna().all().all()
    written = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
    assert (written.loc[benign.to_numpy(), "alnm"] == "").all()
    assert set(written.loc[~benign.to_numpy(), "alnm"]) == {"0", "1"}
    malignant = frame[~benign]
    assert ((malignant["aln_count"] > 0) == (malignant["alnm"] == 1)).all()
    patients = frame.groupby("patient_id")
    # one lesion per patient: its labels agree across views (unknown counts as one value)
    assert (patients[["malignant", "alnm", "aln_count"]].nunique(dropna=False) == 1).all().all()
    assert set(patients.size()) == {1, 2}
    first = patients.first()
    assert 0.3 <= first["malignant"].mean() <= 0.5
    assert 0.35 <= first.loc[first["malignant"] == 1, "alnm"].mean() <= 0.65
    counts = first.loc[first["alnm"] == 1, "aln_count"]
    for threshold in (2, 3, 4):
        assert (counts >= threshold).sum() > 0, threshold


def test_images_per_patient_and_arguments(tmp_path):
    frame = make_phantoms(tmp_path, n_patients=3, images_per_patient=2, size=64, progress=False)
    assert list(frame.groupby("patient_id").size()) == [2, 2, 2]
    assert check_manifest(str(tmp_path / "manifest.csv")) == []
    with pytest.raises(ValueError):
        make_phantoms(tmp_path, n_patients=0, progress=False)
    with pytest.raises(ValueError):
        make_phantoms(tmp_path, images_per_patient=(2, 1), progress=False)


def _roi_pixels(manifest_path: str) -> np.ndarray:
    """Each RoI (box plus 20% margin a side, inside the image) as 32x32 pixels in [0, 1]."""
    manifest = read_manifest(manifest_path)
    rows = []
    for path, box in zip(manifest.image_paths(), manifest.boxes()):
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        h, w = image.shape
        mx, my = round(0.2 * box.width), round(0.2 * box.height)
        crop = image[max(0, box.y_min - my):min(h, box.y_max + my),
                     max(0, box.x_min - mx):min(w, box.x_max + mx)]
        rows.append(cv2.resize(crop, (32, 32), interpolation=cv2.INTER_AREA).ravel() / 255.0)
    return np.array(rows)


def _held_out_auc(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """ROC AUC of out-of-fold scores, every patient held out once (5 patient-level folds)."""
    scores = np.zeros(len(y))
    for train, test in GroupKFold(5).split(x, y, groups):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
        scores[test] = model.fit(x[train], y[train]).predict_proba(x[test])[:, 1]
    return roc_auc_score(y, scores)


def test_labels_can_be_learnt_from_the_roi(phantoms):
    out, frame = phantoms
    x = _roi_pixels(str(out / "manifest.csv"))
    groups = frame["patient_id"].to_numpy()
    malignant = frame["malignant"].to_numpy()
    assert _held_out_auc(x, malignant, groups) >= 0.9  # measured 0.99
    m = malignant == 1
    alnm = frame["alnm"].to_numpy(dtype=float, na_value=np.nan)
    assert _held_out_auc(x[m], alnm[m], groups[m]) >= 0.7  # measured 0.79
