"""Task display names in report.md (the config's ``display_name``), the task names kept in the
CSVs, and the ROC band that follows --bootstrap. tables.md/table3.md: tests/test_protocol.py;
cv.md: tests/test_crossval.py; validation.md: tests/test_validate_report.py."""

import shutil

import pandas as pd
import pytest
import yaml

from tests.conftest import invoke

pytestmark = pytest.mark.slow


def named_run(trained_run, path, names):
    """A copy of the shared tiny run whose config gives ``names`` ({task: display_name})."""
    shutil.copytree(trained_run, path)
    config = yaml.safe_load((path / "config.yaml").read_text())
    for task in config["tasks"]:
        if task["name"] in names:
            task["display_name"] = names[task["name"]]
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def band_calls(monkeypatch):
    """Spy on the ROC band: the n_boot of every call."""
    from usmtl.evaluation import roc_plot

    calls, original = [], roc_plot.roc_band

    def spy(y, score, patient_ids, n_boot=200, **kwargs):
        calls.append(n_boot)
        return original(y, score, patient_ids, n_boot, **kwargs)

    monkeypatch.setattr(roc_plot, "roc_band", spy)
    return calls


def test_report_md_shows_the_configs_display_names(trained_run, tmp_path, band_calls):
    run = named_run(trained_run, tmp_path / "run", {"alnm": "Axillary metastasis"})
    result = invoke("evaluate", run, "--bootstrap", 7)
    assert result.exit_code == 0, result.output
    text = (run / "report.md").read_text()
    # the config's name for alnm, derived ones for the others, in every table
    assert "| Axillary metastasis | malignant = 1 |" in text
    assert "| Malignancy | all |" in text and "| ALN >= 2 |" in text
    assert "| alnm |" not in text and "| malignancy |" not in text
    assert "| Malignancy > Axillary metastasis |" in text  # the inconsistency edges
    assert "95% CIs from 7 bootstrap resamples" in text
    # the CSVs keep the task names as keys, with the display name beside them
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.columns[:2]) == ["task", "display_name"]
    names = dict(zip(metrics["task"], metrics["display_name"]))
    assert names == {"malignancy": "Malignancy", "alnm": "Axillary metastasis",
                     "aln_ge_2": "ALN >= 2"}
    assert "display_name" in pd.read_csv(run / "calibration.csv")
    # the ROC band resampled as often as --bootstrap asked, once per task drawn
    assert band_calls and set(band_calls) == {7}


def test_roc_band_label_states_its_count_and_none_is_drawn_for_zero(trained_run, tmp_path,
                                                                    band_calls):
    from usmtl.evaluation.roc_plot import band_label

    assert band_label(1000) == "95% CI (1000 patient resamples)"
    assert band_label(0) == "no CI band (0 bootstrap resamples)"
    run = named_run(trained_run, tmp_path / "run", {})
    result = invoke("evaluate", run, "--bootstrap", 0)
    assert result.exit_code == 0, result.output
    assert band_calls == []  # no band without resamples
    assert (run / "roc_malignancy.png").is_file()
    assert "no CIs (--bootstrap 0)" in (run / "report.md").read_text()


def test_plot_rocs_legend_names_the_resamples(tmp_path, monkeypatch):
    """The legend text, read off the figure before it is saved."""
    import numpy as np

    from usmtl.evaluation import roc_plot

    legends = []

    def keep(fig, path):
        legends.append([t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()])
        return path

    monkeypatch.setattr(roc_plot, "save_figure", keep)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"patient_id": [f"P{i // 2}" for i in range(40)],
                          "y_malignancy": rng.integers(0, 2, 40).astype(float),
                          "p_malignancy": rng.random(40)})
    roc_plot.plot_rocs(frame, str(tmp_path), n_boot=25)
    assert "95% CI (25 patient resamples)" in legends[0]
    legends.clear()
    roc_plot.plot_rocs(frame, str(tmp_path), n_boot=0)
    assert "no CI band (0 bootstrap resamples)" in legends[0]

