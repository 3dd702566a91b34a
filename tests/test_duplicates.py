"""Near-duplicate images (usmtl.data.duplicates) and what ``usmtl check`` says about them:
a re-encoded copy of an image filed under another patient, in another split."""

import doctest
import os

import cv2
import numpy as np
import pandas as pd
import pytest

from tests.conftest import invoke
from tests.test_importers import BIG, picture, reencoded
from usmtl.data import duplicates as dup
from usmtl.data.io import read_image
from usmtl.data.manifest import check_manifest, read_manifest
from usmtl.data.splits import load_split, make_split, save_split
from usmtl.errors import ImageReadError, UsmtlError

# Four patients' images (p2 has two distinct views) and p5's, a copy of p1's picture.
PATIENTS = ["p1", "p2", "p2", "p3", "p4"]
SPLIT = {"p1": "train", "p2": "train", "p3": "val", "p4": "train", "p5": "test"}


def make_set(root):
    """A manifest of 96 x 128 pictures where line 7 (``img/p5_copy.jpg``, patient p5) is
    line 2's picture (``img/p1_0.png``, patient p1) rescaled by 0.9 and saved as JPEG, and a
    split file that puts p1 in train and p5 in test."""
    (root / "img").mkdir(parents=True)
    rows = []
    for k, patient in enumerate(PATIENTS):
        name = f"img/{patient}_{k}.png"
        assert cv2.imwrite(str(root / name), picture(100 + k, *BIG))
        rows.append({"image": name, "patient_id": patient, "malignant": k % 2})
    copy = reencoded(cv2.imread(str(root / "img" / "p1_0.png"), cv2.IMREAD_GRAYSCALE), 70, 0.9)
    assert cv2.imwrite(str(root / "img" / "p5_copy.jpg"), copy, [cv2.IMWRITE_JPEG_QUALITY, 80])
    rows.append({"image": "img/p5_copy.jpg", "patient_id": "p5", "malignant": 0})
    frame = pd.DataFrame(rows).assign(x_min=10, y_min=10, x_max=40, y_max=40)
    frame.to_csv(root / "manifest.csv", index=False)
    save_split(SPLIT, str(root / "split.csv"))
    return root / "manifest.csv"


def test_reencoded_copy_under_another_patient_and_split_is_found_distinct_images_are_not(tmp_path):
    manifest = make_set(tmp_path)
    report = dup.duplicate_report(manifest, splits=load_split(str(tmp_path / "split.csv")))
    assert len(report) == 1  # the two views of p2 and the other pictures are not flagged
    pair = report.iloc[0]
    assert (pair["kind"], pair["line_a"], pair["image_a"], pair["patient_a"], pair["split_a"]) \
        == ("across splits", 2, "img/p1_0.png", "p1", "train")
    assert (pair["line_b"], pair["image_b"], pair["patient_b"], pair["split_b"]) \
        == (7, "img/p5_copy.jpg", "p5", "test")
    assert pair["across_patients"] and pair["across_splits"]
    assert pair["distance"] <= 20  # distinct pictures here are >= 100 bits apart
    assert dup.report_counts(report) == {"pairs": 1, "across_patients": 1, "across_splits": 1,
                                         "same_patient": 0}
    # Without a split the same pair is a cross-patient one.
    assert dup.duplicate_report(manifest)["kind"].tolist() == ["across patients"]


def test_check_reports_the_pairs_as_warnings_and_lists_them_all_on_request(tmp_path):
    manifest = make_set(tmp_path)
    pairs_csv = tmp_path / "pairs.csv"
    # A run directory holding split.csv is accepted, as by usmtl fit --split-file.
    result = invoke("check", manifest, "--split-file", tmp_path, "--duplicates-out", pairs_csv)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "warning: 1 near-duplicate image pair(s) (pHash distance <= 56 of 256 bits) " \
           "across patients, 1 of them across splits" in out
    assert "across splits: line 2 img/p1_0.png (patient p1, train) ~ line 7 img/p5_copy.jpg " \
           "(patient p5, test): distance " in out
    assert "no problems found" in result.stdout  # warnings never change the exit status
    listed = pd.read_csv(pairs_csv)
    assert listed[["line_a", "line_b", "kind"]].values.tolist() == [[2, 7, "across splits"]]
    # A stricter threshold than the copy's distance finds nothing; --no-duplicates skips it.
    distance = int(listed["distance"][0])
    result = invoke("check", manifest, "--max-distance", distance - 1)
    assert "0 near-duplicate image pair(s) (pHash distance <= " in result.output
    result = invoke("check", manifest, "--no-duplicates")
    assert result.exit_code == 0 and "near-duplicate" not in result.output
    result = invoke("check", manifest, "--no-duplicates", "--duplicates-out", pairs_csv)
    assert result.exit_code == 2 and "--no-duplicates skips" in result.output


def test_grouping_merges_the_two_patients_and_a_later_split_keeps_them_together(tmp_path):
    manifest = make_set(tmp_path)
    grouped = tmp_path / "elsewhere" / "grouped.csv"
    result = invoke("check", manifest, "--group-duplicates", grouped)
    assert result.exit_code == 0, result.output
    assert "2 patients merged into 1; 5 -> 4 patients" in result.output
    frame = read_manifest(grouped).frame  # paths rebased to the copy's folder
    assert frame["patient_id"].tolist() == ["p1+1", "p2", "p2", "p3", "p4", "p1+1"]
    assert frame["source_patient_id"].tolist() == PATIENTS + ["p5"]
    assert check_manifest(grouped) == []
    labels = frame["malignant"].astype(float).to_numpy()
    for seed in range(5):
        split = make_split(frame["patient_id"].to_numpy(), labels, 0.4, 0.2, seed)
        assert split["p1+1"] in ("train", "val", "test")  # one split for both images
        assert len({split[p] for p in frame["patient_id"].iloc[[0, 5]]}) == 1
    with pytest.raises(UsmtlError, match="another file than the manifest itself"):
        dup.write_grouped_manifest(manifest, [(0, 5, 3)], str(manifest))


def test_group_patients_follows_chains_and_keeps_the_first_source_id():
    frame = pd.DataFrame({"image": list("abcde"), "patient_id": ["u", "v", "w", "v", "x"]})
    grouped = dup.group_patients(frame, [(0, 2, 1), (2, 3, 4)])  # u~w, w~v (v also row 1)
    assert grouped["patient_id"].tolist() == ["u+2", "u+2", "u+2", "u+2", "x"]
    again = dup.group_patients(grouped, [(3, 4, 0)])  # grouping twice: the source stays
    assert again["patient_id"].tolist() == ["u+2+1"] * 5
    assert again["source_patient_id"].tolist() == ["u", "v", "w", "v", "x"]
    assert dup.duplicate_groups([(0, 3), (3, 5), (1, 2)], n=7) == [[0, 3, 5], [1, 2]]
    with pytest.raises(UsmtlError, match="Received columns: \\['image'\\]"):
        dup.group_patients(frame[["image"]], [])


def _manifest(tmp_path, images, patients):
    frame = pd.DataFrame({"image": images, "patient_id": patients}).assign(
        x_min=0, y_min=0, x_max=8, y_max=8)
    frame.to_csv(tmp_path / "m.csv", index=False)
    return read_manifest(tmp_path / "m.csv")


@pytest.mark.parametrize("case, images, patients, expected", [
    ("one image", ["a.png"], ["p1"], []),
    ("identical images", ["a.png", "b.png"], ["p1", "p2"], [(2, 3, 0, "across patients")]),
    ("one file, two patients", ["a.png", "a.png"], ["p1", "p2"], [(2, 3, 0, "across patients")]),
    ("one file, one patient", ["a.png", "a.png", "c.png"], ["p1"] * 3, []),
    ("flat images", ["flat1.png", "flat2.png"], ["p1", "p1"], [(2, 3, 0, "same patient")]),
])
def test_manifest_edge_cases(tmp_path, case, images, patients, expected):
    cv2.imwrite(str(tmp_path / "a.png"), picture(1, *BIG))
    cv2.imwrite(str(tmp_path / "b.png"), picture(1, *BIG))  # the very same pixels
    cv2.imwrite(str(tmp_path / "c.png"), picture(2, *BIG))
    cv2.imwrite(str(tmp_path / "flat1.png"), np.full(BIG, 30, np.uint8))
    cv2.imwrite(str(tmp_path / "flat2.png"), np.full((40, 50), 200, np.uint8))
    report = dup.duplicate_report(_manifest(tmp_path, images, patients))
    assert list(report.columns) == list(dup.REPORT_COLUMNS)
    assert [tuple(r) for r in report[["line_a", "line_b", "distance", "kind"]].values] == expected


def test_empty_manifest_and_hash_arrays(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), picture(1, *BIG))
    empty = _manifest(tmp_path, ["a.png"], ["p1"]).subset([False])
    assert len(dup.duplicate_report(empty)) == 0
    assert dup.near_duplicate_pairs(np.zeros((0, 4), np.uint64)) == []
    assert dup.near_duplicate_pairs(np.zeros((1, 4), np.uint64)) == []
    assert dup.near_duplicate_pairs(np.zeros((3, 4), np.uint64)) == [(0, 1, 0), (0, 2, 0),
                                                                      (1, 2, 0)]
    assert dup.image_hashes([]).shape == (0, 4)
    with pytest.raises(UsmtlError, match="Received: -1"):
        dup.near_duplicate_pairs(np.zeros((2, 4), np.uint64), max_distance=-1)
    with pytest.raises(UsmtlError, match="Received: shape \\(4,\\)"):
        dup.near_duplicate_pairs(np.zeros(4, np.uint64))


def test_blocked_pairs_equal_the_brute_force_ones(monkeypatch):
    rng = np.random.default_rng(0)
    bits = rng.random((37, 128)) < 0.5
    bits[20:] = bits[:17] ^ (rng.random((17, 128)) < 0.05)  # near copies of the first 17
    hashes = dup._pack(bits)
    distances = (bits[:, None, :] != bits[None, :, :]).sum(axis=2)
    expected = [(i, j, int(distances[i, j])) for i in range(37) for j in range(i + 1, 37)
                if distances[i, j] <= 20]
    monkeypatch.setattr(dup, "_BLOCK_ELEMENTS", 8)  # many small blocks
    assert dup.near_duplicate_pairs(hashes, 20) == expected
    assert len(expected) >= 17


def test_unreadable_images_are_named_or_left_to_check(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), picture(1, *BIG))
    with pytest.raises(ImageReadError, match="missing.png"):
        dup.image_hashes([str(tmp_path / "a.png"), str(tmp_path / "missing.png")])
    manifest = _manifest(tmp_path, ["a.png", "missing.png", "a.png"], ["p1", "p2", "p3"])
    assert dup.manifest_pairs(manifest) == [(0, 2, 0)]
    result = invoke("check", tmp_path / "m.csv")
    assert result.exit_code == 1 and "missing or unreadable image" in result.output
    assert "1 near-duplicate image pair(s) (pHash distance <= 56 of 256 bits) across " \
           "patients" in result.output


def test_docstring_examples():
    result = doctest.testmod(dup, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.busbra
def test_real_busbra_copies_are_found_and_distinct_images_are_not(busbra_root):
    """A fast slice of the measurement in the module docstring: 120 real images, 20 copies."""
    paths = sorted(str(p) for p in (busbra_root / "Images").glob("*.png"))[:120]
    hashes = dup.image_hashes(paths)
    assert dup.near_duplicate_pairs(hashes) == []  # includes -l/-r views of one lesion
    settings = [(60, 1.0), (75, 0.9), (90, 1.1), (70, 0.5)]
    copies = np.stack([dup.hash_image(reencoded(read_image(p)[:, :, 0], *settings[k % 4]))
                       for k, p in enumerate(paths[:20])])
    distances = dup.hamming_distances(copies, hashes)
    assert (distances.argmin(axis=1) == np.arange(20)).all()
    assert distances.min(axis=1).max() <= 16
    assert os.path.basename(paths[0]) == "bus_0001-l.png"


def test_check_duplicates_is_a_plain_function_that_says_each_line(tmp_path):
    """``usmtl check``'s near-duplicate part without click: every line goes to ``say``."""
    from usmtl.data.duplicate_check import check_duplicates

    manifest = make_set(tmp_path)
    lines = []
    report = check_duplicates(str(manifest), split_file=str(tmp_path / "split.csv"),
                              grouped_out=str(tmp_path / "grouped.csv"), say=lines.append)
    assert report["kind"].tolist() == ["across splits"]
    assert lines[0].startswith("warning: 1 near-duplicate image pair(s) (pHash distance <= 56 "
                               "of 256 bits) across patients, 1 of them across splits")
    assert lines[1].startswith("  across splits: line 2 img/p1_0.png (patient p1, train)")
    assert any("2 patients merged into 1; 5 -> 4 patients" in line for line in lines)
    assert any(line.startswith("note: ") and "knows the old patient ids" in line
               for line in lines)  # the split file predates the merged ids
    assert read_manifest(str(tmp_path / "grouped.csv")).frame["patient_id"].nunique() == 4
    unreadable, said = tmp_path / "not_a_manifest.csv", []
    unreadable.write_text("nothing,here\n1,2\n")
    assert check_duplicates(str(unreadable), say=said.append) is None and said == []
