"""The packed crop file (usmtl.data.pack): round trip against the manifest path, lossy
tolerance, every bad input named, no TensorFlow. No model is trained here."""

import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pandas as pd
import pytest

from tests.conftest import invoke
from usmtl.data.manifest import read_manifest
from usmtl.data.pack import (CROP_KEYS, FORMAT_VERSION, META, encode_crop, is_pack, open_pack,
                             write_pack)
from usmtl.data.roi import load_roi
from usmtl.data.splits import load_split, make_split, save_split
from usmtl.errors import ConfigError, ImageReadError, ManifestError
from usmtl.tasks import TaskGraph, label_table

SIZE, MARGIN = 32, 0.2
# Lossy crops against the lossless ones, per pixel (uint8 levels), at quality 90 on these
# 32 px phantoms: measured mean |error| 1.6 (webp) and 2.1 (jpeg), max 10 and 14.
LOSSY_MEAN_TOLERANCE, LOSSY_MAX_TOLERANCE = 3.0, 32


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """20 phantom patients (LabelImg annotations, no box columns) plus a split file."""
    from usmtl.data.phantoms import make_phantoms

    out = tmp_path_factory.mktemp("pack_phantoms")
    frame = make_phantoms(str(out), n_patients=20, size=64, seed=3, progress=False)
    split = make_split(frame["patient_id"].to_numpy(), frame["malignant"].astype(float).to_numpy(),
                       test_fraction=0.3, val_fraction=0.2, seed=0)
    save_split(split, str(out / "split.csv"))
    return out / "manifest.csv"


@pytest.fixture(scope="module")
def packed(manifest, tmp_path_factory):
    """A lossless pack of ``manifest`` with its split file."""
    out = tmp_path_factory.mktemp("packs") / "phantoms.pack"
    summary = write_pack(manifest, out, image_size=SIZE, roi_margin=MARGIN, codec="png",
                         split_file=str(manifest.parent / "split.csv"), progress=False,
                         warn=None)
    return summary


def reference_crops(manifest_path):
    parsed = read_manifest(str(manifest_path))
    return np.stack([load_roi(p, b, MARGIN, True, SIZE)
                     for p, b in zip(parsed.image_paths(), parsed.boxes())])


@pytest.mark.parametrize("codec", ["png", "webp"])
def test_lossless_round_trip_matches_the_manifest_path(manifest, packed, tmp_path, codec):
    path = packed.path if codec == "png" else str(tmp_path / "w.pack")
    if codec == "webp":
        write_pack(manifest, path, image_size=SIZE, roi_margin=MARGIN, codec="webp",
                   split_file=str(manifest.parent / "split.csv"), progress=False, workers=2)
    parsed = read_manifest(str(manifest))
    with open_pack(path) as pack:
        assert len(pack) == len(parsed) and pack.image_size == SIZE and pack.lossless
        # The crops training cuts, exactly, for every row.
        crops = pack.crops(workers=3)
        assert crops.dtype == np.uint8 and crops.shape == (len(parsed), SIZE, SIZE, 3)
        assert np.array_equal(crops, reference_crops(manifest))
        assert np.array_equal(pack.crop(5), crops[5])
        # The rows as they are: every column, same order, same text.
        original = list(parsed.frame.columns)
        pd.testing.assert_frame_equal(pack.frame[original], parsed.frame)
        assert np.array_equal(pack.manifest().patient_ids(), parsed.patient_ids())
        assert pack.manifest().boxes() == parsed.boxes()  # filled from the annotations
        graph = TaskGraph.from_config(_paper_tasks())
        for task, values in label_table(parsed, graph).items():
            np.testing.assert_array_equal(label_table(pack.manifest(), graph)[task], values)
        split = load_split(str(manifest.parent / "split.csv"))
        assert pack.frame["split"].tolist() == [split[p] for p in parsed.patient_ids()]
        assert pack.split() == split
        meta = pack.meta
        assert meta["format"] == FORMAT_VERSION and meta["count"] == len(parsed)
        assert {k: meta[k] for k in CROP_KEYS} == {"image_size": SIZE, "roi_margin": MARGIN,
                                                  "square_roi": True, "inpaint_marks": False}
        assert meta["source"]["name"] == "manifest.csv" and len(meta["source"]["sha256"]) == 64
        assert meta["channels"] == "1" * len(parsed)  # grey phantoms: one channel each


def _paper_tasks():
    from tests.conftest import PAPER_TASKS
    from usmtl.config import TaskConfig

    return [TaskConfig(**t) for t in PAPER_TASKS]


@pytest.mark.parametrize("codec", ["webp", "jpeg"])
def test_lossy_crops_are_close(manifest, packed, tmp_path, codec):
    path = tmp_path / f"{codec}.pack"
    summary = write_pack(manifest, path, image_size=SIZE, roi_margin=MARGIN, codec=codec,
                         quality=90, progress=False, warn=None)
    assert (summary.codec, summary.quality, summary.lossless) == (codec, 90, False)
    with open_pack(path) as lossy, open_pack(packed.path) as exact:
        assert lossy.meta["quality"] == 90 and not lossy.lossless
        error = np.abs(lossy.crops().astype(int) - exact.crops())
    assert 0 < error.mean() <= LOSSY_MEAN_TOLERANCE and error.max() <= LOSSY_MAX_TOLERANCE


def test_colour_crops_stay_colour(tmp_path):
    import cv2

    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "colour.png"), rng.integers(0, 255, (50, 60, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "grey.png"), rng.integers(0, 255, (50, 60), np.uint8))
    pd.DataFrame({"image": ["colour.png", "grey.png"], "patient_id": ["a", "b"],
                  "malignant": ["1", "0"], "x_min": [5, 5], "y_min": [5, 5],
                  "x_max": [40, 40], "y_max": [30, 30]}).to_csv(tmp_path / "m.csv", index=False)
    for codec in ("png", "webp"):
        write_pack(tmp_path / "m.csv", tmp_path / "c.pack", image_size=24, roi_margin=0.1,
                   codec=codec, progress=False, warn=None)
        with open_pack(tmp_path / "c.pack") as pack:
            assert pack.meta["channels"] == "31"
            parsed = read_manifest(str(tmp_path / "m.csv"))
            for i, (p, b) in enumerate(zip(parsed.image_paths(), parsed.boxes())):
                assert np.array_equal(pack.crop(i), load_roi(p, b, 0.1, True, 24))


def test_grey_crops_take_fewer_bytes_as_one_channel():
    rng = np.random.default_rng(1)
    crop = np.repeat(rng.integers(0, 255, (32, 32, 1), np.uint8), 3, axis=2)
    one, channels = encode_crop(crop, "png")
    three, _ = encode_crop(crop, "png", grey=False)
    assert channels == 1 and len(one) < len(three)


def test_pack_is_thread_safe_and_pickles(packed):
    with open_pack(packed.path) as pack:
        serial = pack.crops(workers=1)
        assert np.array_equal(pack.crops(list(range(len(pack)))[::-1], workers=4), serial[::-1])
        copy = pickle.loads(pickle.dumps(pack))
        assert np.array_equal(copy.crops([0, 3]), serial[[0, 3]])
        copy.close()
        with pytest.raises(IndexError, match="out of range"):
            pack.crop(len(pack))


def test_is_pack(packed, manifest, tmp_path):
    renamed = tmp_path / "renamed.zip"
    renamed.write_bytes(open(packed.path, "rb").read())
    assert is_pack(packed.path) and is_pack(renamed) and is_pack("not/yet/written.pack")
    assert not is_pack(manifest) and not is_pack(tmp_path / "nothing.zip") and not is_pack(None)


def test_require_matches_names_the_key_and_the_fix(packed):
    with open_pack(packed.path) as pack:
        pack.require_matches(SIZE, MARGIN, True, False)  # the same settings: no error
        with pytest.raises(ConfigError) as info:
            pack.require_matches(64, MARGIN, True, False, where="quickstart.yaml")
        message = str(info.value)
        assert "data.image_size: the pack has 32, quickstart.yaml 64" in message
        assert "--size 64" in message and "--set data.image_size=32" in message
        assert "Received:" in message and packed.path in message
        with pytest.raises(ConfigError, match=r"data.roi_margin: the pack has 0.2.*"
                                              r"data.inpaint_marks: the pack has False"):
            pack.require_matches(SIZE, 0.1, True, True)
        from usmtl.config import load_config

        with pytest.raises(ConfigError, match="data.image_size: the pack has 32, busbra 256"):
            pack.require_config(load_config("busbra").data, "busbra")


def _rewrite(src, dst, change=lambda name, data: data, meta=None, drop=()):
    """Copy a pack entry by entry, changing some."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = zin.read(info)
            if info.filename == META and meta is not None:
                data = json.dumps({**json.loads(data), **meta}).encode()
            zout.writestr(info.filename, change(info.filename, data))
    return dst


def _broken(kind, pack, tmp_path):
    """A damaged copy of ``pack``: ``(path, error class, words its message must hold)``."""
    dst = tmp_path / f"{kind}.pack"
    if kind == "missing":
        return dst, ManifestError, ["pack not found", "usmtl pack"]
    if kind == "not-a-zip":
        dst.write_text("image,patient_id\na.png,p1\n")
        return dst, ManifestError, ["not a zip file", "b'image,patient_id"]
    if kind == "truncated-file":
        data = open(pack, "rb").read()
        dst.write_bytes(data[:len(data) // 2])
        return dst, ManifestError, ["truncated", "Received"]
    if kind == "no-pack-json":
        return _rewrite(pack, dst, drop=(META,)), ManifestError, ["no pack.json", "manifest.csv"]
    if kind == "newer-format":
        return (_rewrite(pack, dst, meta={"format": FORMAT_VERSION + 1}), ManifestError,
                ["newer usmtl", f"format {FORMAT_VERSION + 1}", "upgrade usmtl"])
    if kind == "count-mismatch":
        return (_rewrite(pack, dst, drop=("crops/000004.png",)), ManifestError,
                ["disagree on the number of crops", "crop entries"])
    if kind == "truncated-crop":  # consistent zip, crop bytes cut short
        change = lambda name, data: data[:len(data) // 2] if name == "crops/000002.png" else data
        return (_rewrite(pack, dst, change), ImageReadError,
                ["crops/000002.png", "manifest.csv line 4", "does not decode"])
    if kind == "corrupt-crop":  # bytes changed after writing: the CRC catches it
        with open_pack(pack) as opened:
            start = opened._offsets[3] + 20
        data = bytearray(open(pack, "rb").read())
        data[start] ^= 0xFF
        dst.write_bytes(bytes(data))
        return dst, ImageReadError, ["crops/000003.png", "manifest.csv line 5", "CRC-32"]
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["missing", "not-a-zip", "truncated-file", "no-pack-json",
                                  "newer-format", "count-mismatch", "truncated-crop",
                                  "corrupt-crop"])
def test_bad_packs_are_named(packed, tmp_path, kind):
    path, error, words = _broken(kind, packed.path, tmp_path)
    with pytest.raises(error) as info:
        with open_pack(path) as pack:  # a damaged crop is found when read
            pack.crops()
    message = str(info.value)
    assert str(path) in message and "Received:" in message
    for word in words:
        assert word in message, message


def test_write_pack_refuses_bad_input_and_writes_nothing(manifest, tmp_path):
    out = tmp_path / "x.pack"
    bad = tmp_path / "bad.csv"
    frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    frame.loc[2, "image"] = "images/missing.png"
    frame.to_csv(bad, index=False)
    with pytest.raises(ManifestError, match=r"bad.csv line 4 \(image=images/missing.png\)"):
        write_pack(bad, out, image_size=SIZE, roi_margin=MARGIN, progress=False, warn=None)
    split = tmp_path / "split.csv"
    pd.DataFrame({"patient_id": ["nobody"], "split": ["train"]}).to_csv(split, index=False)
    with pytest.raises(ManifestError, match="not in the split"):
        write_pack(manifest, out, image_size=SIZE, roi_margin=MARGIN, split_file=str(split),
                   progress=False, warn=None)
    for codec, quality, words in [("gif", None, "codec must be"),
                                  ("png", 90, "png is lossless"),
                                  ("webp", 0, "quality must be"),
                                  ("auto", 90, "codec 'auto' chooses")]:
        with pytest.raises(ConfigError, match=words):
            write_pack(manifest, out, image_size=SIZE, roi_margin=MARGIN, codec=codec,
                       quality=quality, progress=False)
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_crop_failing_while_writing_leaves_nothing(manifest, tmp_path, monkeypatch):
    import usmtl.data.roi as roi

    paths = read_manifest(str(manifest)).image_paths()

    def changed_after_the_check(path, *args):
        if path == paths[3]:
            raise ImageReadError(f"{path}: cannot decode image (changed)")
        return load_roi(path, *args)

    monkeypatch.setattr(roi, "load_roi", changed_after_the_check)
    out = tmp_path / "x.pack"
    out.write_text("the previous file")
    with pytest.raises(ImageReadError, match=r"manifest.csv line 5 .*changed"):
        write_pack(manifest, out, image_size=SIZE, roi_margin=MARGIN, progress=False,
                   warn=None, workers=2)
    assert out.read_text() == "the previous file" and os.listdir(tmp_path) == ["x.pack"]


def test_cli_pack(manifest, tmp_path):
    out = tmp_path / "cli.pack"
    result = invoke("pack", manifest, "--config", "quickstart", "--size", SIZE, "--codec", "jpeg",
                    "--quality", 80, "--split-file", manifest.parent / "split.csv", "--out", out)
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(f"(32 px, jpeg quality 80), "
                                          f"{os.path.getsize(out) / 1e6:.1f} MB in "
                                          f"{result.output.split(' MB in ')[1].split()[0]} "
                                          f"s: {out}")
    with open_pack(out) as pack:
        assert pack.settings() == {"image_size": SIZE, "roi_margin": 0.2, "square_roi": True,
                                   "inpaint_marks": False}  # quickstart's margin
    result = invoke("pack", manifest, "--codec", "png", "--quality", 80, "--out", out)
    assert result.exit_code == 2 and "png is lossless" in result.output


def test_no_tensorflow_on_the_pack_path(manifest, tmp_path):
    code = (f"import sys\n"
            f"from usmtl.data.pack import write_pack, open_pack\n"
            f"write_pack({str(manifest)!r}, {str(tmp_path / 'p.pack')!r}, image_size=16, "
            f"roi_margin=0.1, progress=False, warn=None)\n"
            f"open_pack({str(tmp_path / 'p.pack')!r}).crops()\n"
            f"assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, "
            f"[m for m in sys.modules if m.startswith(('tensorflow', 'keras'))][:5]\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(tmp_path))
