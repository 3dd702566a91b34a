"""Publication figures: formats and resolution, display names, ROC bands with n, forest plots
with numbers and Q/I² (and no empty one), Grad-CAM panels with a uniform colormap."""

import os

import numpy as np
import pandas as pd
import pytest

from tests.conftest import invoke
from usmtl.errors import UsmtlError
from usmtl.evaluation.figures import figure_settings


def test_figure_settings_default_to_300_dpi_png_and_pdf():
    assert figure_settings({}) == (("png", "pdf"), 300)
    assert figure_settings({"USMTL_FIGURE_FORMATS": "svg", "USMTL_FIGURE_DPI": "600"}) == (
        ("png", "svg"), 600)
    with pytest.raises(UsmtlError, match="among.*Received: tiff"):
        figure_settings({"USMTL_FIGURE_FORMATS": "tiff"})
    with pytest.raises(UsmtlError, match="50 to 1200. Received: 5"):
        figure_settings({"USMTL_FIGURE_DPI": "5"})


def test_display_names_come_from_the_config():
    from usmtl.config import load_config
    from usmtl.tasks import display_names

    cfg = load_config("quickstart", ["tasks.alnm.display_name=Axillary metastasis"])
    names = display_names(cfg.tasks)
    assert names["alnm"] == "Axillary metastasis" and names["aln_ge_3"] == "ALN >= 3"


def _frame(seed=0, n=60):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(float)
    return pd.DataFrame({"image": [f"i{i}" for i in range(n)],
                         "patient_id": [f"p{i // 2}" for i in range(n)],
                         "p_aln_ge_2": np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1),
                         "y_aln_ge_2": y})


def test_roc_has_a_band_n_and_the_display_name_in_every_format(tmp_path, monkeypatch):
    monkeypatch.setenv("USMTL_FIGURE_FORMATS", "pdf,svg")
    monkeypatch.setenv("USMTL_FIGURE_DPI", "100")
    import matplotlib.pyplot as plt

    from usmtl.evaluation import roc_plot

    titles = []
    monkeypatch.setattr(plt, "close", lambda fig: titles.extend(
        a.get_title() for a in fig.axes) or None)
    paths = roc_plot.plot_rocs(_frame(), str(tmp_path), n_boot=30)
    assert [os.path.basename(p) for p in paths] == ["roc_aln_ge_2.png", "roc_all.png"]
    for ext in ("png", "pdf", "svg"):
        assert (tmp_path / f"roc_aln_ge_2.{ext}").is_file(), ext
    assert titles[0].startswith("ALN >= 2\nn = 60 images, ")
    from PIL import Image

    with Image.open(tmp_path / "roc_aln_ge_2.png") as image:
        assert round(image.info["dpi"][0]) == 100
    grid, low, high = roc_plot.roc_band(_frame()["y_aln_ge_2"].to_numpy(),
                                        _frame()["p_aln_ge_2"].to_numpy(),
                                        _frame()["patient_id"], n_boot=30)
    assert (low <= high + 1e-12).all() and (high - low).max() > 0


def test_forest_plot_has_numbers_and_heterogeneity_and_none_when_untestable(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from usmtl.evaluation.subgroups import plot_forest, subgroup_metrics

    frame = _frame(1, 80)
    frame["device"] = np.where(np.arange(80) % 2, "GE", "Siemens")
    table = subgroup_metrics(frame, "aln_ge_2", frame["device"], n_boot=20)
    texts = []
    monkeypatch.setattr(plt, "close", lambda fig: texts.extend(
        [a.get_title() for a in fig.axes] + [t.get_text() for a in fig.axes for t in a.texts])
        or None)
    path = plot_forest(table, "aln_ge_2", "device", str(tmp_path / "forest.png"))
    assert os.path.isfile(path) and (tmp_path / "forest.pdf").is_file()
    assert any(t.startswith("ALN >= 2 by device\nQ = ") and "I² = " in t for t in texts), texts
    assert any(t.startswith("0.") and " to " in t for t in texts), texts  # the numbers column
    one_class = table.assign(auc=np.nan)
    assert plot_forest(one_class, "aln_ge_2", "device", str(tmp_path / "empty.png")) is None
    assert not (tmp_path / "empty.png").exists()


def test_gradcam_panels_use_a_uniform_colormap_and_say_what_a_label_is(tmp_path):
    from usmtl.explain import plots

    assert plots.CMAP in ("inferno", "magma", "viridis", "cividis", "plasma")
    assert plots._panel_title("aln_ge_2", 0.42, float("nan")) == "ALN >= 2\np = 0.42, label unknown"
    roi = np.zeros((32, 32, 3), np.uint8)
    panel = plots.Panel("img1", roi, {"alnm": np.random.rand(32, 32).astype("float32")},
                        {"alnm": 0.7}, {"alnm": 1.0})
    plots.save_contact_sheet(str(tmp_path / "sheet.png"), [panel], ["alnm"], "Grad-CAM")
    assert (tmp_path / "sheet.png").is_file() and (tmp_path / "sheet.pdf").is_file()


@pytest.mark.slow
def test_evaluate_writes_the_formats_asked_for(trained_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    result = invoke("evaluate", run, "--bootstrap", 20, "--format", "svg", "--dpi", 72)
    assert result.exit_code == 0, result.output
    for name in ("roc_malignancy", "roc_all", "reliability_malignancy"):
        assert (run / f"{name}.png").is_file() and (run / f"{name}.svg").is_file(), name
        assert not (run / f"{name}.pdf").exists()
