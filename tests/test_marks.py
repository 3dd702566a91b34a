"""Burned-in marks (calipers, dots, text): detection, inpainting, data.inpaint_marks, and the
shortcut audit's pure functions."""

import doctest

import cv2
import numpy as np
import pandas as pd
import pytest

from usmtl.data.marks import detect_marks, inpaint_marks, mark_stats
from usmtl.errors import UsmtlError


def synthetic_scan(seed=0, height=220, width=280, level=100.0):
    """Speckle-like tissue (Rayleigh noise, grains elongated laterally as in B-mode), darker
    with depth, and a dark elliptical lesion centred at (140, 95). Returns (image, lesion)."""
    rng = np.random.default_rng(seed)
    speckle = cv2.GaussianBlur(rng.rayleigh(1.0, (height, width)), (0, 0), sigmaX=1.6, sigmaY=0.8)
    image = level * speckle / speckle.mean() * np.linspace(1.15, 0.75, height)[:, None]
    yy, xx = np.mgrid[0:height, 0:width]
    lesion = ((xx - 140) / 55.0) ** 2 + ((yy - 95) / 32.0) ** 2 <= 1
    image[lesion] *= 0.35
    return np.clip(image, 0, 255).astype(np.uint8), lesion


def draw_marks(shape, value=255):
    """What a sonographer burns in: '+' calipers at the lesion's ends, an 'x', a dotted
    measurement line, two lines of text. Returns the drawing (0 where nothing is drawn)."""
    canvas = np.zeros(shape[:2], np.uint8)
    for x, y in ((85, 95), (195, 95), (140, 63), (140, 127)):
        cv2.drawMarker(canvas, (x, y), value, cv2.MARKER_CROSS, 11, 1)
    cv2.drawMarker(canvas, (60, 40), value, cv2.MARKER_TILTED_CROSS, 9, 1)
    for x in range(90, 195, 6):
        cv2.circle(canvas, (x, 160), 1, value, -1)
    cv2.putText(canvas, "MAMA ESQ", (20, 200), cv2.FONT_HERSHEY_SIMPLEX, 0.45, value, 1)
    cv2.putText(canvas, "QSE 4H", (180, 30), cv2.FONT_HERSHEY_PLAIN, 1.0, value, 1)
    return canvas


def marked_scan(seed=0, **kwargs):
    """``(marked image, clean image, drawn pixels)``."""
    clean, _ = synthetic_scan(seed, **kwargs)
    canvas = draw_marks(clean.shape)
    drawn = canvas > 0
    return np.where(drawn, canvas, clean), clean, drawn


# ---------------------------------------------------------------------------------------
# Detection and inpainting
# ---------------------------------------------------------------------------------------


def test_detect_marks_finds_calipers_dots_and_text_and_little_else():
    marked, clean, drawn = marked_scan()
    found = detect_marks(marked)
    assert found.shape == drawn.shape and found.dtype == bool
    assert found[drawn].mean() >= 0.8, found[drawn].mean()  # recall of the drawn pixels
    near = cv2.dilate(drawn.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    assert (found & ~near).mean() < 0.005  # nothing far from a mark
    for seed in range(3):  # the same tissue without marks: next to nothing
        assert detect_marks(synthetic_scan(seed)[0]).mean() < 0.01
        assert detect_marks(synthetic_scan(seed, level=170.0)[0]).mean() < 0.01  # bright tissue
    stats = mark_stats(marked, found)
    assert 0.01 < stats["area_share"] < 0.1 and stats["n_components"] >= 8
    assert mark_stats(clean) == {"area_share": 0.0, "n_components": 0}


def test_detect_marks_takes_grey_rgb_and_finds_colour_overlays():
    marked, _, drawn = marked_scan()
    grey = detect_marks(marked)
    np.testing.assert_array_equal(detect_marks(np.repeat(marked[:, :, None], 3, axis=2)), grey)
    np.testing.assert_array_equal(detect_marks(marked[:, :, None]), grey)
    clean, _ = synthetic_scan(1)
    rgb = np.repeat(clean[:, :, None], 3, axis=2)
    cv2.rectangle(rgb, (30, 30), (120, 90), (0, 200, 255), 1)  # a coloured box outline
    found = detect_marks(rgb)
    assert found[30, 30:121].all() and found[30:91, 120].all()
    assert found.mean() < 0.02


def test_detect_marks_errors_name_what_was_received():
    with pytest.raises(UsmtlError, match="uint8.*Received: dtype float64"):
        detect_marks(np.zeros((20, 20)))
    with pytest.raises(UsmtlError, match="Received: shape"):
        detect_marks(np.zeros((4, 20, 20), np.uint8))
    with pytest.raises(UsmtlError, match="Received: stroke=2"):
        detect_marks(np.zeros((20, 20), np.uint8), stroke=2)
    with pytest.raises(UsmtlError, match="Received: \\(10, 10\\)"):
        inpaint_marks(np.zeros((20, 20), np.uint8), np.zeros((10, 10), bool))


def test_inpainting_replaces_marks_with_their_surroundings():
    marked, clean, drawn = marked_scan()
    out = inpaint_marks(marked)
    assert out.shape == marked.shape and out.dtype == np.uint8
    before = np.abs(marked.astype(int) - clean)[drawn].mean()
    after = np.abs(out.astype(int) - clean)[drawn].mean()
    assert before > 100 and after < 20, (before, after)  # close to the tissue (sd ~24)
    assert detect_marks(out).mean() < 0.002  # nothing left to find
    outside = ~detect_marks(marked)
    np.testing.assert_array_equal(out[outside], marked[outside])  # the rest untouched
    # RGB in, RGB out; nothing to inpaint: the image itself.
    rgb = inpaint_marks(np.repeat(marked[:, :, None], 3, axis=2))
    assert rgb.shape == marked.shape + (3,)
    np.testing.assert_array_equal(rgb[:, :, 0], rgb[:, :, 2])
    assert inpaint_marks(clean) is clean or np.array_equal(inpaint_marks(clean), clean)


def test_marks_docstring_examples():
    import usmtl.data.marks as marks
    import usmtl.explain.audit as audit

    for module in (marks, audit):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# ---------------------------------------------------------------------------------------
# data.inpaint_marks: config and every reader of a RoI
# ---------------------------------------------------------------------------------------


def test_inpaint_marks_config_round_trip(tmp_path):
    from tests.conftest import tiny_config_dict

    from usmtl.config import ConfigError, config_from_dict, load_config, save_config

    assert config_from_dict(tiny_config_dict()).data.inpaint_marks is False  # opt-in
    cfg = config_from_dict(tiny_config_dict(data={"inpaint_marks": True}))
    assert cfg.data.inpaint_marks is True
    save_config(cfg, str(tmp_path / "config.yaml"))
    assert "inpaint_marks: true" in (tmp_path / "config.yaml").read_text()
    assert load_config(str(tmp_path / "config.yaml")).data.inpaint_marks is True
    with pytest.raises(ConfigError, match="data.inpaint_marks.*Received: 'maybe'"):
        config_from_dict(tiny_config_dict(data={"inpaint_marks": "maybe"}))
    cfg.data.inpaint_marks = "yes"
    with pytest.raises(ConfigError, match="data.inpaint_marks must be true or false"):
        cfg.validate()


def test_load_roi_and_the_pipeline_inpaint_before_cropping(tmp_path):
    from usmtl.config import DataConfig
    from usmtl.data.manifest import Box
    from usmtl.data.pipeline import roi_images
    from usmtl.data.roi import crop_roi, load_roi

    marked, _, _ = marked_scan()
    path = str(tmp_path / "scan.png")
    cv2.imwrite(path, marked)
    box = Box(90, 65, 190, 125)  # the box's left edge cuts the caliper at x=85
    data = DataConfig(image_size=48, roi_margin=0.1, inpaint_marks=True, cache="none")
    rgb = np.repeat(marked[:, :, None], 3, axis=2)
    expected = crop_roi(inpaint_marks(rgb), box, 0.1, True, 48)  # whole image, then crop
    got = load_roi(path, box, 0.1, True, 48, inpaint=True)
    np.testing.assert_array_equal(got, expected)
    plain = load_roi(path, box, 0.1, True, 48)
    np.testing.assert_array_equal(plain, crop_roi(rgb, box, 0.1, True, 48))
    assert not np.array_equal(got, plain)
    crops = np.stack(list(roi_images([path], [box], data).as_numpy_iterator()))
    np.testing.assert_array_equal(crops[0], expected)


# ---------------------------------------------------------------------------------------
# The shortcut audit's numbers, from arrays
# ---------------------------------------------------------------------------------------


def _audit_frame(kind, n=12, size=32, seed=0):
    """Rows of image_shares for maps that are uniform, on the lesion box, or on marks."""
    from usmtl.explain.audit import image_shares

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        x0, y0 = rng.integers(6, 12, 2)
        box = np.zeros((size, size), bool)
        box[y0:y0 + 14, x0:x0 + 14] = True
        mask = np.zeros_like(box)
        mask[y0 + 2:y0 + 12, x0 + 2:x0 + 12] = True
        marks = np.zeros_like(box)
        marks[y0 + 6, x0 - 4:x0 + 1] = True  # a caliper at the box's left end
        heat = {"uniform": np.ones((size, size)), "lesion": mask * 1.0 + 0.02,
                "marks": marks * 1.0 + 0.01}[kind]
        rows.append({"task": "malignancy", "patient_id": f"p{i // 2}", "cam_all_zero": 0,
                     **image_shares(heat, box, mask, marks)})
    return pd.DataFrame(rows)


def test_audit_shares_lie_in_unit_interval_and_uniform_maps_match_area():
    frame = _audit_frame("uniform")
    for column in ("cam_in_box", "box_fraction", "cam_in_mask", "mask_fraction",
                   "cam_on_marks", "marks_fraction"):
        assert frame[column].between(0, 1).all(), column
    np.testing.assert_allclose(frame["cam_in_box"], frame["box_fraction"])
    np.testing.assert_allclose(frame["cam_in_mask"], frame["mask_fraction"])


def test_audit_warns_when_attention_is_no_better_than_uniform():
    from usmtl.explain.audit import ABOVE, DRAWN, NOT_DRAWN, UNIFORM, summarise

    table, warnings = summarise(_audit_frame("uniform"), n_boot=200)
    by = table.set_index("region")
    assert by.loc["box", "verdict"] == UNIFORM and by.loc["mask", "verdict"] == UNIFORM
    assert np.isclose(by.loc["box", "ratio"], 1.0) and np.isclose(by.loc["mask", "ratio"], 1.0)
    assert by.loc["marks", "verdict"] == NOT_DRAWN
    assert len(warnings) == 2 and all(w.startswith("WARNING: malignancy:") for w in warnings)
    assert "lesion box is no better than a uniform map (ratio 1.00" in warnings[0]

    table, warnings = summarise(_audit_frame("lesion"), n_boot=200)
    by = table.set_index("region")
    assert by.loc["box", "verdict"] == ABOVE and by.loc["mask", "verdict"] == ABOVE
    assert by.loc["mask", "ratio"] > 2 and by.loc["mask", "ratio_low"] > 1
    assert by.loc["mask", "ratio_low"] <= by.loc["mask", "ratio"] <= by.loc["mask", "ratio_high"]
    assert warnings == []

    table, warnings = summarise(_audit_frame("marks"), n_boot=200)
    by = table.set_index("region")
    assert by.loc["marks", "verdict"] == DRAWN and by.loc["box", "verdict"] == UNIFORM
    assert any("burned-in marks is above their area share" in w for w in warnings)
    # All-zero maps (NaN mass) are left out; no bootstrap: the threshold alone decides.
    frame = _audit_frame("lesion")
    frame.loc[:3, ["cam_in_box", "cam_in_mask", "cam_on_marks"]] = np.nan
    table, _ = summarise(frame, n_boot=0)
    assert (table["n_images"] == 8).all() and table["ratio_low"].isna().all()
    with pytest.raises(UsmtlError, match="Received: 1.5"):
        summarise(frame, level=1.5)
