"""Patient-level, stratified splits: a patient can never be in two splits."""

import csv

import numpy as np
import pandas as pd
import pytest

from usmtl.data.manifest import Box, Manifest, read_manifest
from usmtl.data.splits import (load_split, make_split, patient_strata, rows_in_split,
                               save_split, split_from_manifest)
from usmtl.errors import ManifestError


def random_manifest(rng, n_patients, unknown_rate=0.1, positive_rate=0.4):
    """Rows of patients with 1-4 images each; labels per patient, some unknown."""
    pids, labels = [], []
    for p in range(n_patients):
        label = float(rng.random() < positive_rate)
        for _ in range(rng.integers(1, 5)):
            pids.append(f"P{p:04d}")
            labels.append(np.nan if rng.random() < unknown_rate else label)
    order = rng.permutation(len(pids))  # images of one patient are not adjacent
    return np.array(pids)[order], np.array(labels)[order]


def as_manifest(pids, path="/data/manifest.csv", split=None):
    frame = pd.DataFrame({"image": [f"{i}.png" for i in range(len(pids))],
                          "patient_id": list(pids)})
    if split is not None:
        frame["split"] = list(split)
    return Manifest(frame, path, [Box(0, 0, 1, 1)] * len(pids))


@pytest.mark.parametrize("seed", range(25))
def test_no_patient_in_two_splits(seed):
    rng = np.random.default_rng(1000 + seed)
    pids, labels = random_manifest(rng, int(rng.integers(1, 120)))
    split = make_split(pids, labels, test_fraction=0.3, val_fraction=0.15, seed=seed)
    assert set(split) == set(pids)  # every patient, once (a dict cannot hold two)
    assert set(split.values()) <= {"train", "val", "test"}
    rows = rows_in_split(as_manifest(pids), split)
    for pid in set(pids):
        assert len(set(rows[pids == pid])) == 1
    # the sets of patients per split are disjoint
    by_split = {s: set(pids[rows == s]) for s in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["test"])
    assert not (by_split["train"] & by_split["val"])
    assert not (by_split["val"] & by_split["test"])


@pytest.mark.parametrize("test_fraction, val_fraction", [(0.3, 0.15), (0.2, 0.0), (0.0, 0.2),
                                                         (0.5, 0.25), (0.0, 0.0)])
def test_fractions(test_fraction, val_fraction):
    rng = np.random.default_rng(7)
    pids, labels = random_manifest(rng, 400)
    split = make_split(pids, labels, test_fraction, val_fraction, seed=3)
    counts = pd.Series(split).value_counts()
    n = len(split)
    # per-stratum rounding: off by at most one patient per stratum (3 strata)
    assert abs(counts.get("test", 0) - test_fraction * n) <= 3
    assert abs(counts.get("val", 0) - val_fraction * n) <= 3
    assert counts.get("train", 0) + counts.get("test", 0) + counts.get("val", 0) == n


@pytest.mark.parametrize("seed", range(5))
def test_stratification_keeps_positive_rate(seed):
    rng = np.random.default_rng(seed)
    pids, labels = random_manifest(rng, 300, unknown_rate=0.0, positive_rate=0.2)
    split = make_split(pids, labels, 0.3, 0.15, seed=seed)
    strata = patient_strata(pids, labels)
    rate = {name: np.mean([strata[p] for p, s in split.items() if s == name])
            for name in ("train", "val", "test")}
    overall = np.mean(list(strata.values()))
    for name in rate:
        assert abs(rate[name] - overall) < 0.03, rate


def test_small_strata_are_all_placed():
    split = make_split(["a", "b", "c"], [1.0, 0.0, np.nan], 0.3, 0.15, seed=0)
    assert split == {"a": "train", "b": "train", "c": "train"}


@pytest.mark.parametrize("seed", [0, 1, 42])
def test_deterministic_per_seed(seed):
    pids, labels = random_manifest(np.random.default_rng(5), 150)
    first = make_split(pids, labels, 0.3, 0.15, seed=seed)
    assert make_split(pids, labels, 0.3, 0.15, seed=seed) == first
    # row order does not matter either
    order = np.random.default_rng(9).permutation(len(pids))
    assert make_split(pids[order], labels[order], 0.3, 0.15, seed=seed) == first


def test_seeds_differ():
    pids, labels = random_manifest(np.random.default_rng(5), 150)
    splits = [make_split(pids, labels, 0.3, 0.15, seed=s) for s in range(4)]
    assert len({tuple(sorted(s.items())) for s in splits}) == 4


def test_patient_strata():
    pids = np.array(["a", "a", "b", "b", "c", "d", "d", "e"])
    labels = np.array([np.nan, 0.0, 0.0, 1.0, np.nan, np.nan, np.nan, 1.0])
    assert patient_strata(pids, labels) == {"a": 0, "b": 1, "c": -1, "d": -1, "e": 1}


def test_unknown_label_patients_are_their_own_stratum():
    pids = [f"u{i}" for i in range(20)] + [f"k{i}" for i in range(20)]
    labels = [np.nan] * 20 + [float(i % 2) for i in range(20)]
    split = make_split(pids, labels, 0.3, 0.0, seed=0)
    unknown_test = sum(split[f"u{i}"] == "test" for i in range(20))
    assert unknown_test == 6  # round(0.3 * 20) of the unknown stratum
    assert sum(v == "test" for v in split.values()) == 6 + 3 + 3


@pytest.mark.parametrize("labels", [[], [np.nan, np.nan], [1.0, 1.0], [0.0, 0.0]])
def test_degenerate_labels(labels):
    pids = [f"p{i}" for i in range(len(labels))]
    split = make_split(pids, labels, 0.5, 0.0, seed=0)
    assert set(split) == set(pids)


def test_all_patients_one_class():
    pids = [f"p{i}" for i in range(10)]
    split = make_split(pids, [1.0] * 10, 0.3, 0.2, seed=0)
    assert pd.Series(split).value_counts().to_dict() == {"train": 5, "test": 3, "val": 2}


def test_numeric_patient_ids_become_text():
    split = make_split(np.array([1, 2, 3, 4]), np.array([0, 1, 0, 1.0]), 0.5, 0.0, seed=0)
    assert set(split) == {"1", "2", "3", "4"}


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    split = {"007": "test", "NA": "train", "p 1": "val", "b": "train", "": "test"}
    path = tmp_path / "split.csv"
    save_split(split, str(path))
    assert load_split(str(path)) == split
    assert load_split(str(tmp_path)) == split  # a run directory means its split.csv
    assert not (tmp_path / "split.csv.tmp").exists()
    assert path.read_text().splitlines()[0] == "patient_id,split"


def test_save_load_round_trip_random(tmp_path):
    pids, labels = random_manifest(np.random.default_rng(2), 60)
    split = make_split(pids, labels, seed=0)
    save_split(split, str(tmp_path / "s.csv"))
    assert load_split(str(tmp_path / "s.csv")) == split


def write_split(tmp_path, text):
    path = tmp_path / "split.csv"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, match, problems", [
    ("patient_id,split\na,train\nb,training\nc,\n", "train, val or test",
     ["line 3: 'training'", "line 4: ''"]),
    ("patient_id,split\na,train\nb,test\na,val\n", "several lines", ["a"]),
    ("pid,split\na,train\n", "columns patient_id,split", []),
    ("split,patient_id\ntrain,a\n", "columns patient_id,split", []),
    ("patient_id\na\n", "columns patient_id,split", []),
])
def test_load_split_errors(tmp_path, text, match, problems):
    with pytest.raises(ManifestError, match=match) as info:
        load_split(write_split(tmp_path, text))
    assert info.value.problems == problems


def test_load_split_missing(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        load_split(str(tmp_path / "none.csv"))
    with pytest.raises(ManifestError, match="not found"):
        load_split(str(tmp_path))  # a folder without split.csv


def test_load_split_extra_columns_and_empty(tmp_path):
    assert load_split(write_split(tmp_path, "patient_id,split,note\na,val,x\n")) == {"a": "val"}
    assert load_split(write_split(tmp_path, "patient_id,split\n")) == {}


def test_rows_in_split():
    manifest = as_manifest(["a", "b", "a", "c"])
    rows = rows_in_split(manifest, {"a": "test", "b": "train", "c": "val", "z": "train"})
    assert rows.tolist() == ["test", "train", "test", "val"]


def test_rows_in_split_lists_missing_patients():
    manifest = as_manifest(["a", "b", "c", "b", "d"])
    with pytest.raises(ManifestError) as info:
        rows_in_split(manifest, {"a": "train", "c": "test"})
    assert info.value.problems == ["'b'", "'d'"]
    assert "2 patient(s)" in str(info.value) and "manifest.csv" in str(info.value)


# ---------------------------------------------------------------------------------------
# A manifest's own split column
# ---------------------------------------------------------------------------------------


def write_manifest(tmp_path, rows):
    path = tmp_path / "manifest.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "patient_id", "x_min", "y_min", "x_max", "y_max", "split"])
        for i, (pid, split) in enumerate(rows):
            writer.writerow([f"{i}.png", pid, 0, 0, 4, 4, split])
    return read_manifest(str(path))


def test_split_from_manifest(tmp_path):
    manifest = write_manifest(tmp_path, [("a", "train"), ("b", "test"), ("a", "train"),
                                         ("c", "val")])
    assert split_from_manifest(manifest) == {"a": "train", "b": "test", "c": "val"}


def test_split_from_manifest_without_splits(tmp_path):
    assert split_from_manifest(write_manifest(tmp_path, [("a", ""), ("b", "")])) is None
    assert split_from_manifest(as_manifest(["a"])) is None  # no column


def test_split_from_manifest_patient_in_two_splits(tmp_path):
    manifest = write_manifest(tmp_path, [("a", "train"), ("b", "test"), ("a", "test"),
                                         ("a", "test"), ("b", "val")])
    with pytest.raises(ManifestError, match="several splits") as info:
        split_from_manifest(manifest)
    assert info.value.problems == ["patient 'a' is in both 'train' and 'test'",
                                   "patient 'b' is in both 'test' and 'val'"]


def test_split_from_manifest_partly_filled(tmp_path):
    manifest = write_manifest(tmp_path, [("a", "train"), ("b", ""), ("c", "test")])
    with pytest.raises(ManifestError, match="some rows but not all") as info:
        split_from_manifest(manifest)
    assert len(info.value.problems) == 1 and "line 3 " in info.value.problems[0]
