"""Importers on tiny fake layouts (and, when present, on the real BUS-BRA): rows, what they
skip and say, near-duplicates, layout errors."""

import os
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from usmtl.data.importers import import_busbra, import_busi, import_labelimg
from usmtl.data.manifest import Box, check_manifest, read_manifest, write_voc_box
from usmtl.errors import ManifestError, UsmtlError

BUSBRA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "BUS-BRA"
H, W = 20, 30


def picture(seed, h=H, w=W):
    """A grey picture of smooth random blobs under speckle: distinct seeds are far apart for
    a perceptual hash, as distinct scans are (a flat image would match any other flat one).
    At 96 x 128 a :func:`reencoded` copy stays within 20 bits of it, distinct ones >= 100."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (6, 8)).astype(np.float32)
    blobs = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(blobs * rng.rayleigh(0.8, (h, w)), 0, 255).astype(np.uint8)


def reencoded(array, quality=70, scale=0.9):
    """``array`` slightly rescaled and JPEG-encoded at ``quality``, decoded again."""
    h, w = array.shape[:2]
    small = cv2.resize(array, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_UNCHANGED)


def write_png(path, box=None, array=None, shape=(H, W)):
    """A grey image of ``shape`` (a :func:`picture` seeded by the file name, or ``array``);
    with ``box``, a mask that is 255 inside the box and 0 elsewhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array is None:
        array = picture(zlib.crc32(path.name.encode()), *shape)
    if box is not None:
        array = np.zeros(shape, np.uint8)
        array[box.y_min:box.y_max, box.x_min:box.x_max] = 255
    assert cv2.imwrite(str(path), array)


def logged(**kwargs):
    """``(kwargs + log=..., lines)``: what an importer says, kept in ``lines``."""
    lines = []
    return {**kwargs, "log": lines.append}, lines


def boxes_of(out):
    return read_manifest(out).boxes()


# ---------------------------------------------------------------------------------------
# BUS-BRA
# ---------------------------------------------------------------------------------------

BUSBRA_ROWS = [
    # ID, Case, Histology, Pathology, BBOX, mask box
    ("bus_0001-l", "1", "invasive ductal carcinoma", "malignant", "[3,4,5,6]", Box(2, 3, 8, 10)),
    ("bus_0001-r", "1", "invasive ductal carcinoma", "malignant", "[4,4,5,6]", Box(3, 3, 9, 10)),
    ("bus_0002-s", "2", "fibroadenoma", "benign", "[21,11,40,40]", Box(20, 10, 25, 15)),
]


def make_busbra(root, folds=True):
    for image_id, _, _, _, _, box in BUSBRA_ROWS:
        write_png(root / "Images" / f"{image_id}.png")
        write_png(root / "Masks" / f"mask_{image_id[4:]}.png", box)
    pd.DataFrame({
        "ID": [r[0] for r in BUSBRA_ROWS], "Case": [r[1] for r in BUSBRA_ROWS],
        "Histology": [r[2] for r in BUSBRA_ROWS], "Pathology": [r[3] for r in BUSBRA_ROWS],
        "BIRADS": ["4", "4", "3"], "Device": ["GE Logiq 7"] * 3, "Width": [W] * 3,
        "Height": [H, H, 999], "Side": ["left", "right", "single"],
        "BBOX": [r[4] for r in BUSBRA_ROWS],
    }).to_csv(root / "bus_data.csv", index=False)
    if folds:
        pd.DataFrame({"ID": [r[0] for r in BUSBRA_ROWS], "Pathology": [r[3] for r in BUSBRA_ROWS],
                      "kFold": [3, 3, 5]}).to_csv(root / "5-fold-cv.csv", index=False)
    return root


def test_busbra_mask_boxes_labels_and_paths(tmp_path):
    root = make_busbra(tmp_path / "BUS-BRA")
    out = tmp_path / "out" / "manifest.csv"
    kwargs, said = logged(progress=False)
    frame = import_busbra(root, out, **kwargs)
    assert said[-1] == f"3 rows written to {out}, 0 skipped"
    assert any("Near-duplicate images (pHash distance <= 56 of 256 bits): none" in s for s in said)
    assert len(pd.read_csv(tmp_path / "out" / "manifest_duplicates.csv")) == 0
    assert list(frame.columns) == [
        "image", "patient_id", "malignant", "alnm", "aln_count", "x_min", "y_min", "x_max",
        "y_max", "mask", "histology", "idc", "birads", "device", "side", "fold"]
    assert frame["patient_id"].tolist() == ["busbra-1", "busbra-1", "busbra-2"]
    assert frame["malignant"].tolist() == [1, 1, 0]
    assert frame["idc"].tolist() == [1, 1, 0]
    assert frame["fold"].tolist() == ["3", "3", "5"]
    assert (frame["alnm"] == "").all() and (frame["aln_count"] == "").all()
    assert frame["image"][0] == os.path.join("..", "BUS-BRA", "Images", "bus_0001-l.png")
    assert boxes_of(out) == [r[5] for r in BUSBRA_ROWS]
    manifest = read_manifest(out)
    assert os.path.samefile(manifest.image_paths()[2], root / "Images" / "bus_0002-s.png")
    assert os.path.samefile(manifest.mask_paths()[2], root / "Masks" / "mask_0002-s.png")
    assert check_manifest(out) == []


def test_busbra_bbox_is_converted_and_clipped(tmp_path):
    root = make_busbra(tmp_path / "BUS-BRA", folds=False)
    out = tmp_path / "manifest.csv"
    frame = import_busbra(root, out, box_source="bbox", progress=False)
    assert "fold" not in frame.columns
    # [x, y, w, h] 1-based -> (x - 1, y - 1, x + w, y + h); the last one clipped to 30 x 20.
    assert boxes_of(out) == [Box(2, 3, 8, 10), Box(3, 3, 9, 10), Box(20, 10, W, H)]
    assert check_manifest(out) == []


def test_busbra_missing_files_are_all_reported_and_nothing_written(tmp_path):
    root = make_busbra(tmp_path / "BUS-BRA")
    (root / "Images" / "bus_0001-r.png").unlink()
    (root / "Masks" / "mask_0002-s.png").unlink()
    out = tmp_path / "manifest.csv"
    with pytest.raises(ManifestError) as info:
        import_busbra(root, out, progress=False)
    assert len(info.value.problems) == 2
    assert "line 3 (ID=bus_0001-r): image not found" in info.value.problems[0]
    assert "line 4 (ID=bus_0002-s): mask not found" in info.value.problems[1]
    assert not out.exists()


def test_busbra_bad_rows(tmp_path):
    root = make_busbra(tmp_path / "BUS-BRA")
    table = pd.read_csv(root / "bus_data.csv", dtype=str)
    table.loc[0, "Pathology"] = "unknown"
    table.loc[1, "BBOX"] = "[1,2,3]"
    table.to_csv(root / "bus_data.csv", index=False)
    out = tmp_path / "manifest.csv"
    with pytest.raises(ManifestError, match="Received: 'unknown'"):
        import_busbra(root, out, progress=False)
    table.loc[0, "Pathology"] = "malignant"
    table.to_csv(root / "bus_data.csv", index=False)
    with pytest.raises(ManifestError, match=r"line 3 .*BBOX.*Received: '\[1,2,3\]'"):
        import_busbra(root, out, box_source="bbox", progress=False)
    with pytest.raises(ValueError, match="Received: 'csv'"):
        import_busbra(root, out, box_source="csv")
    assert not out.exists()


BIG = (96, 128)  # near-duplicate tests: copies of tiny images are not near a hash's eye


def test_busbra_counts_unlisted_images_and_finds_a_copy_across_patients_and_folds(tmp_path):
    root = make_busbra(tmp_path / "BUS-BRA")
    for image_id, *_, box in BUSBRA_ROWS:  # larger images, the same lesions
        write_png(root / "Images" / f"{image_id}.png", shape=BIG)
        write_png(root / "Masks" / f"mask_{image_id[4:]}.png", box, shape=BIG)
    original = cv2.imread(str(root / "Images" / "bus_0001-l.png"), cv2.IMREAD_GRAYSCALE)
    write_png(root / "Images" / "bus_0002-s.png", array=reencoded(original, 60, scale=1.0))
    write_png(root / "Images" / "bus_0003-l.png")  # no row in bus_data.csv
    out = tmp_path / "busbra.csv"
    kwargs, said = logged(progress=False)
    frame = import_busbra(root, out, **kwargs)
    text = "\n".join(said)
    assert frame["patient_id"].tolist() == ["busbra-1", "busbra-1", "busbra-2"]
    assert "Skipped 1 image(s)" in text and "bus_0003-l.png" in text
    assert "1 pair(s): 1 across patients (1 across the authors' folds), 0 within" in text
    assert "across splits: line 2 BUS-BRA/Images/bus_0001-l.png (patient busbra-1, 3) ~ line 4 " \
           "BUS-BRA/Images/bus_0002-s.png (patient busbra-2, 5): distance" in text.replace(os.sep, "/")
    assert "--group-duplicates" in text
    assert said[-1] == (f"3 rows written to {out}, 1 skipped: 1 image(s) without a row in "
                        f"bus_data.csv")
    pairs = pd.read_csv(tmp_path / "busbra_duplicates.csv")
    assert pairs[["line_a", "line_b", "kind"]].values.tolist() == [[2, 4, "across splits"]]
    assert frame.attrs["import_report"]["across_patients"] == 1
    # On request, the copy's patient joins the original's.
    frame = import_busbra(root, out, progress=False, group_duplicates=True, log=None)
    assert frame["patient_id"].tolist() == ["busbra-1+1"] * 3
    assert frame["source_patient_id"].tolist() == ["busbra-1", "busbra-1", "busbra-2"]
    assert check_manifest(out) == []


@pytest.mark.busbra
def test_busbra_real_data(tmp_path):
    if not BUSBRA.is_dir():
        pytest.skip(f"{BUSBRA} is absent")
    out = tmp_path / "busbra.csv"
    frame = import_busbra(BUSBRA, out, progress=False, duplicates=False, log=None)
    assert len(frame) == 1875
    assert frame["patient_id"].nunique() == 1064
    assert frame["malignant"].sum() == 607
    assert frame["idc"].sum() == 520
    assert (frame.loc[frame["idc"] == 1, "malignant"] == 1).all()
    assert frame["fold"].notna().all()
    # The mask box equals the converted CSV BBOX (x - 1, y - 1, x + w, y + h) everywhere but
    # in bus_0845-s, whose BBOX is much larger than its mask.
    table = pd.read_csv(BUSBRA / "bus_data.csv", dtype=str)
    bbox = np.array([[int(v) for v in s.strip("[]").split(",")] for s in table["BBOX"]])
    csv_boxes = np.stack([bbox[:, 0] - 1, bbox[:, 1] - 1, bbox[:, 0] + bbox[:, 2],
                          bbox[:, 1] + bbox[:, 3]], axis=1)
    mask_boxes = frame[["x_min", "y_min", "x_max", "y_max"]].to_numpy()
    differ = table["ID"][(csv_boxes != mask_boxes).any(axis=1)].tolist()
    assert differ == ["bus_0845-s"]
    i = table.index[table["ID"] == "bus_0845-s"][0]
    mask_box, csv_box = Box(*mask_boxes[i]), Box(*csv_boxes[i])
    assert mask_box.width * mask_box.height < csv_box.width * csv_box.height / 2
    first = read_manifest(out).image_paths()[0]
    assert os.path.samefile(first, BUSBRA / "Images" / "bus_0001-l.png")


# ---------------------------------------------------------------------------------------
# BUSI
# ---------------------------------------------------------------------------------------


def make_busi(parent):
    folder = parent / "Dataset_BUSI_with_GT"
    write_png(folder / "benign" / "benign (1).png")
    write_png(folder / "benign" / "benign (1)_mask.png", Box(1, 2, 5, 6))
    write_png(folder / "benign" / "benign (2).png")
    write_png(folder / "benign" / "benign (2)_mask.png", Box(10, 10, 12, 12))
    write_png(folder / "benign" / "benign (2)_mask_1.png", Box(2, 12, 4, 19))
    write_png(folder / "benign" / "benign (10).png")
    write_png(folder / "benign" / "benign (10)_mask.png", Box(0, 0, W, H))
    write_png(folder / "malignant" / "malignant (1).png")
    write_png(folder / "malignant" / "malignant (1)_mask.png", Box(7, 8, 9, 10))
    write_png(folder / "normal" / "normal (1).png")
    write_png(folder / "normal" / "normal (1)_mask.png", Box(0, 0, 0, 0))
    return folder


def test_busi_one_row_per_lesion_and_normal_images_counted(tmp_path):
    folder = make_busi(tmp_path)
    out = tmp_path / "busi.csv"
    kwargs, said = logged(progress=False)
    with pytest.warns(UserWarning, match="patient-level splitting is impossible"):
        frame = import_busi(tmp_path, out, **kwargs)
    # benign (2) has two masks with separate lesions: two rows, each its own box and mask.
    assert frame["patient_id"].tolist() == ["busi-benign-1", "busi-benign-2", "busi-benign-2",
                                            "busi-benign-10", "busi-malignant-1"]
    assert frame["malignant"].tolist() == [0, 0, 0, 0, 1]
    assert "normal" not in frame.columns
    assert boxes_of(out) == [Box(1, 2, 5, 6), Box(10, 10, 12, 12), Box(2, 12, 4, 19),
                             Box(0, 0, W, H), Box(7, 8, 9, 10)]
    manifest = read_manifest(out)
    masks = [os.path.basename(m) for m in manifest.mask_paths()]
    assert masks[1:3] == ["benign (2)_mask.png", "benign (2)_mask_1.png"]
    assert os.path.samefile(manifest.image_paths()[4], folder / "malignant" / "malignant (1).png")
    assert os.path.samefile(manifest.image_paths()[1], manifest.image_paths()[2])
    assert check_manifest(out) == []
    text = "\n".join(said)
    assert "1 image(s) have several lesion masks: one row per lesion" in text
    assert "Skipped 1 normal image(s)" in text and "--include-normal" in text
    assert "on by default: the data set has no patient ids" in text
    assert "no patients to merge" in text
    assert said[-1] == (f"5 rows written to {out}, 1 skipped: 1 normal image(s) (no lesion; "
                        f"--include-normal keeps them)")
    assert frame.attrs["import_report"]["skipped"] == {
        "normal image(s) (no lesion; --include-normal keeps them)": 1}


def test_busi_root_may_be_the_dataset_folder_and_normal_images_can_join(tmp_path):
    folder = make_busi(tmp_path)
    (folder / "benign" / "Thumbs.db").write_bytes(b"x")
    out = tmp_path / "busi.csv"
    kwargs, said = logged(progress=False)
    with pytest.warns(UserWarning):
        frame = import_busi(folder, out, include_normal=True, **kwargs)
    assert len(frame) == 6
    normal = frame.iloc[-1]
    assert normal["patient_id"] == "busi-normal-1"
    assert (normal["normal"], normal["malignant"], normal["mask"]) == (1, 0, "")
    assert frame["normal"].tolist() == [0, 0, 0, 0, 0, 1]
    assert boxes_of(out)[-1] == Box(0, 0, W, H)
    assert check_manifest(out) == []
    assert said[-1] == f"6 rows written to {out}, 1 skipped: 1 non-PNG file(s) in the class folders"


def make_busi_with_copy(parent):
    """A BUSI folder of 96 x 128 images where ``benign (3).png`` is a re-encoded copy of
    ``benign (1).png`` (JPEG q70, rescaled by 0.9): one picture, two 'patients'."""
    folder = parent / "Dataset_BUSI_with_GT"
    lesion = Box(20, 20, 50, 40)
    for name in ("benign (1)", "benign (2)", "malignant (1)"):
        write_png(folder / name.split()[0] / f"{name}.png", shape=BIG)
        write_png(folder / name.split()[0] / f"{name}_mask.png", lesion, shape=BIG)
    original = cv2.imread(str(folder / "benign" / "benign (1).png"), cv2.IMREAD_GRAYSCALE)
    copy = reencoded(original, 70, scale=0.9)
    write_png(folder / "benign" / "benign (3).png", array=copy)
    write_png(folder / "benign" / "benign (3)_mask.png", Box(18, 18, 45, 36), shape=copy.shape)
    return folder


def test_busi_groups_near_duplicate_images_into_one_patient_by_default(tmp_path):
    make_busi_with_copy(tmp_path)
    out = tmp_path / "busi.csv"
    kwargs, said = logged(progress=False)
    with pytest.warns(UserWarning, match="near-duplicate images were grouped"):
        frame = import_busi(tmp_path, out, **kwargs)
    assert frame["patient_id"].tolist() == ["busi-benign-1+1", "busi-benign-2",
                                            "busi-benign-1+1", "busi-malignant-1"]
    assert frame["source_patient_id"].tolist() == ["busi-benign-1", "busi-benign-2",
                                                   "busi-benign-3", "busi-malignant-1"]
    text = "\n".join(said)
    assert "1 pair(s): 1 across patients" in text and "busi_duplicates.csv" in text
    assert "benign (1).png (patient busi-benign-1) ~ line 4" in text
    assert "2 patients merged into 1; 4 -> 3 patients" in text
    assert "--no-group-duplicates" in text
    pairs = pd.read_csv(tmp_path / "busi_duplicates.csv")
    assert pairs[["line_a", "line_b", "kind"]].values.tolist() == [[2, 4, "across patients"]]
    assert check_manifest(out) == []
    # Turned off: one patient per image again, the pair still listed.
    with pytest.warns(UserWarning):
        frame = import_busi(tmp_path, out, progress=False, group_duplicates=False, log=None)
    assert frame["patient_id"].nunique() == 4 and "source_patient_id" not in frame.columns
    assert len(pd.read_csv(tmp_path / "busi_duplicates.csv")) == 1
    with pytest.raises(UsmtlError, match="group_duplicates needs the near-duplicate search"):
        import_busi(tmp_path, out, duplicates=False, group_duplicates=True)


def test_import_cli_reports_skips_pairs_and_warnings(tmp_path):
    from tests.conftest import invoke

    make_busi_with_copy(tmp_path)
    write_png(tmp_path / "Dataset_BUSI_with_GT" / "normal" / "normal (1).png")
    out = tmp_path / "busi.csv"
    result = invoke("import", "busi", tmp_path, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == (
        f"4 rows written to {out}, 1 skipped: 1 normal image(s) (no lesion; --include-normal "
        f"keeps them)")
    assert "2 patients merged into 1" in result.stdout
    assert "warning: BUSI has no patient ids" in result.stderr
    result = invoke("import", "busi", tmp_path, "--out", out, "--no-duplicates",
                    "--group-duplicates")
    assert result.exit_code == 2 and "needs the near-duplicate search" in result.output


@pytest.mark.parametrize("layout", ["nested", "class folder"])
def test_busi_layout_one_folder_off_names_the_layout_and_where_to_point(tmp_path, layout):
    if layout == "nested":  # as some unzip tools leave it
        folder = make_busi(tmp_path / "Dataset_BUSI_with_GT")
        root, hint = tmp_path, f"are in {folder}: point ROOT there (2 folder(s) down)"
        seen = "1 folder(s) ['Dataset_BUSI_with_GT'] and 0 file(s) []"
    else:
        folder = make_busi(tmp_path)
        root, hint = folder / "benign", f"point ROOT one folder up, at {folder}"
        seen = "0 folder(s) [] and 7 file(s) ['benign (1).png', 'benign (1)_mask.png'"
    with pytest.raises(ManifestError) as info:
        import_busi(root, tmp_path / "busi.csv", log=None)
    message = str(info.value)
    assert "expected ROOT/benign/*.png and ROOT/malignant/*.png (optionally ROOT/normal/*.png)" \
        in message
    assert seen in message
    assert hint in message
    assert message.endswith(f"Received: {root}")
    assert not (tmp_path / "busi.csv").exists()


def test_busi_bad_input_raises_and_writes_nothing(tmp_path):
    folder = make_busi(tmp_path)
    write_png(folder / "benign" / "benign (3).png")
    write_png(folder / "benign" / "benign (3)_mask.png", Box(0, 0, 0, 0))
    write_png(folder / "malignant" / "malignant (2).png")
    write_png(folder / "malignant" / "malignant (9)_mask.png", Box(1, 1, 2, 2))
    write_png(folder / "malignant" / "copy of malignant (1).png")
    out = tmp_path / "busi.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ManifestError) as info:
            import_busi(tmp_path, out)
    problems = "\n".join(info.value.problems)
    assert len(info.value.problems) == 4
    assert "benign (3).png: no lesion" in problems
    assert "malignant (2).png: no lesion" in problems
    assert "malignant (9)_mask.png: mask without its image" in problems
    assert "Received: 'copy of malignant (1).png'" in problems
    assert not out.exists()
    with pytest.raises(ManifestError, match="not a BUSI folder"):
        import_busi(folder / "benign", out)


# ---------------------------------------------------------------------------------------
# LabelImg
# ---------------------------------------------------------------------------------------


def make_labelimg(root, annotations=None):
    images = root / "images"
    annotations = annotations or images
    annotations.mkdir(parents=True, exist_ok=True)
    for name, box in (("a.png", Box(1, 2, 5, 6)), ("b.jpg", Box(10, 3, 20, 13))):
        write_png(images / name)
        write_voc_box(str(annotations / (Path(name).stem + ".xml")), str(images / name), H, W, box)
    return images


def test_labelimg_rows_labels_and_boxes(tmp_path):
    images = make_labelimg(tmp_path)
    labels = tmp_path / "labels.csv"
    labels.write_text("image,patient_id,malignant,alnm,aln_count,birads\n"
                      "a.png,p1,1,1,3,5\n"
                      "b,p1,0,,,3\n")
    out = tmp_path / "out" / "manifest.csv"
    frame = import_labelimg(images, labels, out)
    assert list(frame.columns) == ["image", "patient_id", "annotation", "malignant", "alnm",
                                   "aln_count", "birads"]
    assert frame["image"].tolist() == [os.path.join("..", "images", "a.png"),
                                       os.path.join("..", "images", "b.jpg")]
    assert frame["patient_id"].tolist() == ["p1", "p1"]
    assert frame["aln_count"].tolist() == ["3", ""]
    assert boxes_of(out) == [Box(1, 2, 5, 6), Box(10, 3, 20, 13)]
    manifest = read_manifest(out)
    assert os.path.samefile(manifest.image_paths()[1], images / "b.jpg")
    assert check_manifest(out) == []


def test_labelimg_annotations_dir_and_patient_warnings(tmp_path):
    images = make_labelimg(tmp_path, annotations=tmp_path / "xml")
    labels = tmp_path / "labels.csv"
    labels.write_text("image,malignant\nb.jpg,1\n")
    write_png(images / "c.png")  # neither a row nor an annotation
    out = tmp_path / "manifest.csv"
    kwargs, said = logged(progress=False)
    with pytest.warns(UserWarning, match="no 'patient_id' column"):
        frame = import_labelimg(images, labels, out, annotations_dir=tmp_path / "xml", **kwargs)
    text = "\n".join(said)
    assert "Skipped 1 image(s)" in text and "with a LabelImg annotation but no row" in text
    assert "['a.png']" in text and "['c.png']" in text
    assert "Near-duplicate grouping (on by default: the data set has no patient ids" in text
    assert said[-1] == (f"1 rows written to {out}, 2 skipped: 1 image(s) with a LabelImg "
                        f"annotation but no row in labels.csv; 1 image(s) with neither a row in "
                        f"labels.csv nor an annotation")
    assert frame["patient_id"].tolist() == ["b"]
    assert frame["annotation"].tolist() == [os.path.join("xml", "b.xml")]
    assert boxes_of(out) == [Box(10, 3, 20, 13)]
    assert check_manifest(out) == []


def test_labelimg_all_errors_at_once_with_line_numbers(tmp_path):
    images = make_labelimg(tmp_path)
    write_png(images / "c.bmp")
    write_png(images / "d.png")
    (images / "d.xml").write_text("<annotation><filename>d.png</filename></annotation>")
    labels = tmp_path / "labels.csv"
    labels.write_text("image,patient_id,malignant\n"
                      "a.png,p1,1\n"
                      "missing.png,p2,0\n"
                      "c,p3,0\n"
                      "d.png,p4,1\n"
                      "b.jpg,p5,2\n")
    out = tmp_path / "manifest.csv"
    with pytest.raises(ManifestError) as info:
        import_labelimg(images, labels, out)
    problems = info.value.problems
    assert len(problems) == 4
    assert problems[0].startswith("labels.csv line 3 (image=missing.png): no image")
    assert problems[1].startswith("labels.csv line 4 (image=c): no LabelImg annotation")
    assert problems[2].startswith("labels.csv line 5 (image=d.png):")
    assert "no <object><bndbox>" in problems[2]
    assert problems[3] == "labels.csv line 6 (image=b.jpg): 'malignant' must be 0, 1 or empty. " \
                          "Received: '2'"
    assert not out.exists()
    labels.write_text("name,malignant\na.png,1\n")
    with pytest.raises(ManifestError, match="missing required column"):
        import_labelimg(images, labels, out)
    assert not out.exists()
