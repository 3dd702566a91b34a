"""The manifest (reading, LabelImg boxes, ``check``) and the image readers."""

import csv
import re

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import usmtl.cli
from usmtl.data.io import read_image, read_mask, to_uint8
from usmtl.data.manifest import (Box, check_manifest, parse_binary, parse_count, read_manifest,
                                 read_voc_box, write_voc_box)
from usmtl.errors import ImageReadError, ManifestError

BOX_HEADER = ["image", "patient_id", "x_min", "y_min", "x_max", "y_max"]


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def write_png(path, height=64, width=64, value=128):
    cv2.imwrite(str(path), np.full((height, width), value, np.uint8))
    return str(path)


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


def test_read_manifest_with_box_columns(tmp_path):
    path = write_csv(tmp_path / "m.csv", BOX_HEADER + ["malignant", "alnm", "aln_count", "site"], [
        ["a.png", "p1", 1, 2, 30, 40, 1, 1, 3, "left"],
        ["sub/b.png", "p1", "0", "0", "10", "10", 0, "", "", "right"],
        ["/abs/c.png", "p2", 5, 5, 6, 6, "", "", "", ""],
    ])
    manifest = read_manifest(path)
    assert len(manifest) == 3
    assert manifest.boxes() == [Box(1, 2, 30, 40), Box(0, 0, 10, 10), Box(5, 5, 6, 6)]
    assert manifest.image_paths() == [str(tmp_path / "a.png"), str(tmp_path / "sub" / "b.png"),
                                      "/abs/c.png"]
    assert manifest.patient_ids().tolist() == ["p1", "p1", "p2"]
    assert manifest.column("site").tolist() == ["left", "right", ""]  # extra columns kept
    assert manifest.mask_paths() == [None, None, None]
    assert manifest.where(1) == "m.csv line 3 (image=sub/b.png)"
    sub = manifest.subset([False, True, True])
    assert len(sub) == 2 and sub.boxes() == [Box(0, 0, 10, 10), Box(5, 5, 6, 6)]


@pytest.mark.parametrize("rows, named", [(None, ["line 3", "line 4"]), ([0, 2], ["line 4"]),
                                         ([0], [])])
def test_require_images_names_the_rows_whose_file_is_missing(tmp_path, rows, named):
    write_png(tmp_path / "a.png")
    path = write_csv(tmp_path / "m.csv", BOX_HEADER, [
        ["a.png", "p1", 1, 1, 9, 9], ["gone.png", "p1", 1, 1, 9, 9], ["/nowhere/c.png", "p2", 1, 1, 9, 9]])
    manifest = read_manifest(path)
    if not named:
        manifest.require_images(rows)  # every requested image exists
        return
    with pytest.raises(ManifestError, match=f"{len(named)} image file") as info:
        manifest.require_images(rows)
    assert [p.split(" (")[0] for p in info.value.problems] == [f"m.csv {n}" for n in named]


def test_box_properties():
    box = Box(10, 20, 50, 40)
    assert (box.width, box.height, box.is_empty) == (40, 20, False)
    assert box.inside(40, 50) and not box.inside(39, 50) and not box.inside(40, 49)
    assert Box(3, 3, 3, 9).is_empty and Box(5, 5, 4, 9).is_empty
    assert box.union(Box(0, 30, 20, 60)) == Box(0, 20, 50, 60)
    mask = np.zeros((10, 10), bool)
    mask[2:5, 3:7] = True
    assert Box.from_mask(mask) == Box(3, 2, 7, 5)
    assert Box.from_mask(np.zeros((4, 4))) is None


@pytest.mark.parametrize("box", [Box(0, 0, 64, 48), Box(10, 5, 11, 6), Box(3, 7, 40, 30)])
def test_voc_round_trip(tmp_path, box):
    path = str(tmp_path / "a.xml")
    write_voc_box(path, str(tmp_path / "a.png"), 48, 64, box)
    assert read_voc_box(path) == box


def test_voc_is_one_based_inclusive(tmp_path):
    path = str(tmp_path / "a.xml")
    write_voc_box(path, "a.png", 100, 100, Box(10, 20, 50, 40))
    text = open(path).read()
    for tag, value in (("xmin", 11), ("ymin", 21), ("xmax", 50), ("ymax", 40)):
        assert f"<{tag}>{value}</{tag}>" in text


VOC_TWO_OBJECTS = """<annotation>
  <filename>a.png</filename>
  <object><name>lesion</name>
    <bndbox><xmin>11</xmin><ymin>21</ymin><xmax>30</xmax><ymax>40</ymax></bndbox></object>
  <object><name>lesion</name>
    <bndbox><xmin>26.4</xmin><ymin>6</ymin><xmax>60</xmax><ymax>35</ymax></bndbox></object>
  <object><name>no box</name></object>
</annotation>
"""


def test_voc_several_objects_give_the_union(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(VOC_TWO_OBJECTS)
    assert read_voc_box(str(path)) == Box(10, 5, 60, 40)


@pytest.mark.parametrize("text, match", [
    ("<annotation><object><name>x</name></object></annotation>", "no <object><bndbox>"),
    ("<annotation></annotation>", "no <object><bndbox>"),
    ("<annotation><object><bndbox><xmin>a</xmin><ymin>1</ymin><xmax>2</xmax><ymax>3</ymax>"
     "</bndbox></object></annotation>", "numeric"),
    ("<annotation><object><bndbox><xmin>1</xmin></bndbox></object></annotation>", "numeric"),
    ("<annotation><unclosed></annotation>", "not a valid XML"),
    ("", "not a valid XML"),
])
def test_voc_errors(tmp_path, text, match):
    path = tmp_path / "a.xml"
    path.write_text(text)
    with pytest.raises(ManifestError, match=match) as info:
        read_voc_box(str(path))
    assert str(path) in str(info.value)


def test_voc_missing_file(tmp_path):
    with pytest.raises(ManifestError, match="annotation file not found"):
        read_voc_box(str(tmp_path / "none.xml"))


def test_read_manifest_with_annotations(tmp_path):
    (tmp_path / "ann").mkdir()
    write_voc_box(str(tmp_path / "ann" / "a.xml"), "a.png", 64, 64, Box(4, 5, 20, 30))
    (tmp_path / "ann" / "b.xml").write_text(VOC_TWO_OBJECTS)
    path = write_csv(tmp_path / "m.csv", ["image", "patient_id", "annotation", "malignant"], [
        ["a.png", "p1", "ann/a.xml", 1],
        ["b.png", "p2", str(tmp_path / "ann" / "b.xml"), 0],
    ])
    assert read_manifest(path).boxes() == [Box(4, 5, 20, 30), Box(10, 5, 60, 40)]


def test_box_columns_win_over_annotation_and_annotation_fills_gaps(tmp_path):
    write_voc_box(str(tmp_path / "a.xml"), "a.png", 64, 64, Box(4, 5, 20, 30))
    path = write_csv(tmp_path / "m.csv", BOX_HEADER + ["annotation"], [
        ["a.png", "p1", 1, 1, 9, 9, "a.xml"],
        ["b.png", "p2", "", "", "", "", "a.xml"],
    ])
    assert read_manifest(path).boxes() == [Box(1, 1, 9, 9), Box(4, 5, 20, 30)]


@pytest.mark.parametrize("header, missing", [
    (["patient_id", "x_min", "y_min", "x_max", "y_max"], "image"),
    (["image", "x_min", "y_min", "x_max", "y_max"], "patient_id"),
    (["image", "patient_id", "x_min", "y_min", "x_max"], "x_min,y_min,x_max,y_max or annotation"),
    (["image", "patient_id"], "x_min,y_min,x_max,y_max or annotation"),
    (["x"], "image, patient_id"),
])
def test_missing_columns(tmp_path, header, missing):
    path = write_csv(tmp_path / "m.csv", header, [["1"] * len(header)])
    with pytest.raises(ManifestError, match="missing required column") as info:
        read_manifest(path)
    assert missing in str(info.value)


@pytest.mark.parametrize("content, match", [
    ("image,patient_id,x_min,y_min,x_max,y_max\n", "no rows"),
    ("", "not a readable CSV"),
])
def test_empty_manifest(tmp_path, content, match):
    path = tmp_path / "m.csv"
    path.write_text(content)
    with pytest.raises(ManifestError, match=match):
        read_manifest(str(path))


def test_manifest_not_found(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(str(tmp_path / "nope.csv"))


def test_read_manifest_reports_every_structural_problem(tmp_path):
    path = write_csv(tmp_path / "m.csv", BOX_HEADER + ["malignant", "aln_count", "split"], [
        ["ok.png", "p0", 0, 0, 5, 5, 1, 2, "train"],
        ["", "p1", 0, 0, 5, 5, 1, "", ""],                # line 3: empty image
        ["b.png", "", 0, 0, 5, 5, 1, "", ""],             # line 4: empty patient
        ["c.png", "p3", 0, 0, 5, 5, "maybe", "", ""],     # line 5: bad label
        ["d.png", "p4", 0, 0, 5, 5, 1, "1.5", ""],        # line 6: bad count
        ["e.png", "p5", 0, 0, 5, 5, 1, "-1", ""],         # line 7: negative count
        ["f.png", "p6", 0, 0, 5, 5, 1, "", "training"],   # line 8: bad split
        ["g.png", "p7", 0, 0, 5.5, 5, 1, "", ""],         # line 9: fractional box
        ["h.png", "p8", "a", 0, 5, 5, 1, "", ""],         # line 10: non-numeric box
        ["i.png", "p9", "", "", "", "", 1, "", ""],       # line 11: no RoI
        ["j.png", "p10", 5, 5, 5, 9, 1, "", ""],          # line 12: empty box
    ])
    with pytest.raises(ManifestError) as info:
        read_manifest(path)
    problems = info.value.problems
    assert len(problems) == 10
    for line, problem in zip(range(3, 13), problems):
        assert f"line {line} " in problem, problem
    assert not any("line 2 " in p for p in problems)


@pytest.mark.parametrize("text, value", [
    ("1", 1.0), ("0", 0.0), ("1.0", 1.0), (" 0 ", 0.0), ("TRUE", 1.0), ("no", 0.0),
])
def test_parse_binary(text, value):
    assert parse_binary(text) == value


@pytest.mark.parametrize("text", ["", "nan", "NA", "None"])
def test_parse_binary_unknown(text):
    assert np.isnan(parse_binary(text)) and np.isnan(parse_count(text))


@pytest.mark.parametrize("text", ["2", "-1", "0.5", "maybe"])
def test_parse_binary_rejects(text):
    with pytest.raises(ValueError):
        parse_binary(text)


@pytest.mark.parametrize("text, ok", [("0", 0.0), ("7", 7.0), ("3.0", 3.0), ("-1", None),
                                      ("1.5", None), ("x", None)])
def test_parse_count(text, ok):
    if ok is None:
        with pytest.raises(ValueError):
            parse_count(text)
    else:
        assert parse_count(text) == ok


# ---------------------------------------------------------------------------------------
# check_manifest and `usmtl check`
# ---------------------------------------------------------------------------------------

CHECK_HEADER = BOX_HEADER + ["malignant", "alnm", "aln_count", "split"]


@pytest.fixture
def bad_manifest(tmp_path):
    """One good row (line 2), then exactly one row per problem."""
    for name in ("good", "box_empty", "box_outside", "label", "benign_alnm", "count",
                 "split_a", "split_b"):
        write_png(tmp_path / f"{name}.png")
    (tmp_path / "garbage.png").write_bytes(b"this is not an image at all" * 10)
    rows = [
        ["good.png", "pgood", 10, 10, 40, 40, 1, 1, 2, "train"],          # 2: no problem
        ["missing.png", "pmissing", 10, 10, 40, 40, 1, 0, 0, "train"],    # 3
        ["garbage.png", "pgarbage", 10, 10, 40, 40, 0, 0, 0, "train"],    # 4
        ["box_empty.png", "pempty", 10, 10, 10, 40, 0, "", "", "train"],  # 5
        ["box_outside.png", "poutside", 10, 10, 100, 40, 0, 0, "", "train"],  # 6
        ["label.png", "plabel", 10, 10, 40, 40, 2, "", "", "train"],      # 7
        ["benign_alnm.png", "pbenign", 10, 10, 40, 40, 0, 1, "", "train"],  # 8
        ["count.png", "pcount", 10, 10, 40, 40, 1, 0, 3, "train"],        # 9
        ["split_a.png", "ptwo", 10, 10, 40, 40, 0, "", "", "train"],      # 10
        ["split_b.png", "ptwo", 10, 10, 40, 40, 0, "", "", "test"],       # 11
    ]
    return write_csv(tmp_path / "manifest.csv", CHECK_HEADER, rows)


EXPECTED = {  # line -> words of its problem
    3: "missing or unreadable image",
    4: "missing or unreadable image",
    5: "box is empty",
    6: "lies outside the 64x64 image",
    7: "label 'malignant' must be 0, 1 or empty",
    8: "ALNM positive on a benign mass",
    9: "aln_count=3 disagrees with alnm=0",
}


def test_check_manifest_reports_each_problem_once(bad_manifest, tmp_path):
    problems = check_manifest(bad_manifest)
    assert len(problems) == len(EXPECTED) + 1, "\n".join(problems)
    for line, words in EXPECTED.items():
        hits = [p for p in problems if re.search(rf"\bline {line}\b", p)]
        assert len(hits) == 1, (line, problems)
        assert words in hits[0]
    assert "file not found" in next(p for p in problems if "line 3 " in p)
    assert str(tmp_path / "garbage.png") in next(p for p in problems if "line 4 " in p)
    split = [p for p in problems if "several splits" in p]
    assert len(split) == 1
    assert "'ptwo'" in split[0] and "lines 10, 11" in split[0]
    assert "['test', 'train']" in split[0]
    assert not any(re.search(r"\bline 2\b", p) or "good.png" in p or "pgood" in p
                   for p in problems)


def test_check_manifest_clean(tmp_path):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "b.png", 48, 80)
    write_png(tmp_path / "mask.png", 48, 80, value=255)
    path = write_csv(tmp_path / "m.csv", CHECK_HEADER + ["mask"], [
        ["a.png", "p1", 0, 0, 64, 64, 1, 1, 2, "train", ""],
        ["b.png", "p1", 0, 0, 80, 48, 1, "", "", "train", "mask.png"],
    ])
    assert check_manifest(path) == []


def test_check_manifest_masks(tmp_path):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "small_mask.png", 32, 32)
    path = write_csv(tmp_path / "m.csv", BOX_HEADER + ["mask"], [
        ["a.png", "p1", 0, 0, 10, 10, "small_mask.png"],
        ["a.png", "p2", 0, 0, 10, 10, "none.png"],
    ])
    problems = check_manifest(path)
    assert len(problems) == 2
    assert "line 2 " in problems[0] and "mask is 32x32 but the image is 64x64" in problems[0]
    assert "line 3 " in problems[1] and "missing or unreadable mask" in problems[1]


def test_check_manifest_structure_error_is_a_problem(tmp_path):
    path = write_csv(tmp_path / "m.csv", ["image"], [["a.png"]])
    problems = check_manifest(path)
    assert len(problems) == 1 and "missing required column" in problems[0]


def test_cli_check_reports_problems(bad_manifest):
    result = CliRunner().invoke(usmtl.cli.main, ["check", bad_manifest])
    assert result.exit_code == 1, result.output
    for line, words in EXPECTED.items():
        assert f"line {line} " in result.output
        assert words in result.output
    assert "several splits" in result.output
    assert f"{len(EXPECTED) + 1} problem(s)" in result.output


def test_cli_check_good_manifest(tmp_path):
    write_png(tmp_path / "a.png")
    path = write_csv(tmp_path / "m.csv", CHECK_HEADER, [
        ["a.png", "p1", 0, 0, 64, 64, 0, 0, 0, "test"]])
    result = CliRunner().invoke(usmtl.cli.main, ["check", path])
    assert result.exit_code == 0, result.output
    assert "no problems found" in result.output


def test_cli_check_missing_manifest(tmp_path):
    result = CliRunner().invoke(usmtl.cli.main, ["check", str(tmp_path / "none.csv")])
    assert result.exit_code == 1
    assert "manifest not found" in result.output


# ---------------------------------------------------------------------------------------
# Image readers
# ---------------------------------------------------------------------------------------


def gradient(height=12, width=20):
    return (np.arange(height * width).reshape(height, width) % 256).astype(np.uint8)


def check_rgb(image, height, width):
    assert image.shape == (height, width, 3)
    assert image.dtype == np.uint8
    assert image.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_read_grey_8bit(tmp_path, suffix):
    grey = gradient()
    path = str(tmp_path / f"a{suffix}")
    assert cv2.imwrite(path, grey)
    image = read_image(path)
    check_rgb(image, 12, 20)
    for c in range(3):
        np.testing.assert_array_equal(image[:, :, c], grey)


def test_read_grey_16bit_is_stretched(tmp_path):
    grey = np.linspace(1000, 5000, 12 * 20).reshape(12, 20).astype(np.uint16)
    path = str(tmp_path / "a.png")
    assert cv2.imwrite(path, grey)
    image = read_image(path)
    check_rgb(image, 12, 20)
    assert image.min() == 0 and image.max() == 255
    expected = np.rint((grey.astype(float) - 1000) * 255 / 4000).astype(np.uint8)
    np.testing.assert_array_equal(image[:, :, 0], expected)


@pytest.mark.parametrize("suffix", [".png", ".bmp"])
def test_read_rgb(tmp_path, suffix):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (10, 14, 3), dtype=np.uint8)
    path = str(tmp_path / f"a{suffix}")
    assert cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    image = read_image(path)
    check_rgb(image, 10, 14)
    np.testing.assert_array_equal(image, rgb)  # channels in RGB order


def test_read_rgba_drops_alpha(tmp_path):
    rgba = np.zeros((8, 9, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 7
    path = str(tmp_path / "a.png")
    assert cv2.imwrite(path, cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    image = read_image(path)
    check_rgb(image, 8, 9)
    assert image[0, 0].tolist() == [200, 100, 50]


def test_read_jpeg(tmp_path):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[..., 0] = 220  # red
    path = str(tmp_path / "a.jpg")
    assert cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    image = read_image(path)
    check_rgb(image, 32, 48)
    assert abs(int(image[16, 24, 0]) - 220) < 8 and image[16, 24, 2] < 10  # not BGR


def write_dicom(path, pixels, photometric="MONOCHROME2", bits=16):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"  # US image storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.astype(np.uint16 if bits == 16 else np.uint8).tobytes()
    dcmwrite(str(path), ds, enforce_file_format=True)
    return str(path)


DICOM_PIXELS = np.linspace(0, 4095, 16 * 24).reshape(16, 24).astype(np.uint16)


@pytest.mark.parametrize("name", ["a.dcm", "a.DICOM", "no_suffix", "a.img"])
def test_read_dicom_monochrome2(tmp_path, name):
    path = write_dicom(tmp_path / name, DICOM_PIXELS)
    image = read_image(path)
    check_rgb(image, 16, 24)
    expected = np.rint(DICOM_PIXELS.astype(float) * 255 / 4095).astype(np.uint8)
    np.testing.assert_array_equal(image[:, :, 1], expected)
    assert image[0, 0, 0] == 0 and image[-1, -1, 0] == 255


def test_read_dicom_monochrome1_is_inverted(tmp_path):
    mono2 = read_image(write_dicom(tmp_path / "m2.dcm", DICOM_PIXELS))
    mono1 = read_image(write_dicom(tmp_path / "m1.dcm", DICOM_PIXELS, "MONOCHROME1"))
    check_rgb(mono1, 16, 24)
    np.testing.assert_array_equal(mono1, 255 - mono2)
    assert mono1[0, 0, 0] == 255  # the lowest value shows white


def test_read_dicom_8bit(tmp_path):
    pixels = gradient(16, 24)
    image = read_image(write_dicom(tmp_path / "a.dcm", pixels, bits=8))
    check_rgb(image, 16, 24)
    np.testing.assert_array_equal(image[:, :, 2], pixels)


def test_read_mask(tmp_path):
    mask = np.zeros((6, 7), np.uint8)
    mask[1:3, 2:5] = 255
    path = str(tmp_path / "m.png")
    cv2.imwrite(path, mask)
    np.testing.assert_array_equal(read_mask(path), mask > 0)


@pytest.mark.parametrize("name, content", [
    ("missing.png", None),
    ("garbage.png", b"\x89PNG but not really" * 20),
    ("garbage.dcm", b"not a dicom file" * 20),
    ("garbage", b"\x00\x01\x02" * 50),
    ("empty.jpg", b""),
])
def test_unreadable_images_name_the_path(tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        read_image(str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize("array, expected", [
    (np.array([[0, 255]], np.uint8), [[0, 255]]),            # 8-bit unchanged
    (np.array([[100, 300]], np.uint16), [[0, 255]]),          # stretched
    (np.array([[7, 7]], np.uint16), [[0, 0]]),                # constant: black
    (np.array([[0.0, 0.5, 1.0]]), [[0, 128, 255]]),
    (np.array([[np.nan, 0.0, 2.0]]), [[0, 0, 255]]),          # NaN as the minimum
    (np.array([[np.nan, np.nan]]), [[0, 0]]),
])
def test_to_uint8(array, expected):
    out = to_uint8(array)
    assert out.dtype == np.uint8
    assert out.tolist() == expected


def test_a_written_manifest_has_the_permissions_of_a_plain_file(tmp_path):
    """Importers write manifests atomically; a temporary file's owner-only mode must not
    stick to the manifest other people read."""
    import os

    import pandas as pd

    from usmtl.data.manifest import write_manifest

    umask = os.umask(0o022)
    try:
        write_manifest(pd.DataFrame({"image": ["a.png"]}), tmp_path / "m.csv")
    finally:
        os.umask(umask)
    assert (tmp_path / "m.csv").stat().st_mode & 0o777 == 0o644
