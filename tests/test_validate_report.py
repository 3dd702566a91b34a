"""usmtl validate (external validation in one command) and usmtl report (the model card), on a
tiny run of the phantoms and an external phantom set drawn with another seed."""

import json
import os
import re
import shutil

import pandas as pd
import pytest

from tests.conftest import invoke

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def external(tmp_path_factory):
    from usmtl.data.phantoms import make_phantoms

    out = tmp_path_factory.mktemp("external")
    frame = make_phantoms(str(out), n_patients=30, size=96, seed=7, progress=False)
    # phantom ids restart at P0001: another hospital's patients get ids of their own
    frame.assign(patient_id="ext-" + frame["patient_id"]).to_csv(out / "manifest.csv", index=False)
    return out / "manifest.csv"


@pytest.fixture
def run(trained_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def test_validate_scores_external_with_internal_thresholds(run, external, tmp_path, monkeypatch):
    import yaml
    from sklearn.metrics import roc_auc_score

    from usmtl.evaluation import roc_plot
    from usmtl.predict import predict

    config = yaml.safe_load((run / "config.yaml").read_text())
    config["tasks"][0]["display_name"] = "Breast cancer"  # validation.md's name for malignancy
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    band, original = [], roc_plot.roc_band
    monkeypatch.setattr(roc_plot, "roc_band",
                        lambda *a, **k: band.append(a[3]) or original(*a, **k))
    out = tmp_path / "validation"
    result = invoke("validate", run, external, "--out", out, "--bootstrap", 50)
    assert result.exit_code == 0, result.output
    for name in ("validation.md", "validation.csv", "validation.json", "reliability_malignancy.png",
                 "internal/metrics.json", "external/metrics.json", "external/report.md"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "validation.csv")
    auc = table[(table.task == "malignancy") & (table.figure == "AUC")].iloc[0]
    frame = predict(str(run), str(external))
    assert auc["external"] == pytest.approx(roc_auc_score(frame["y_malignancy"], frame["p_malignancy"]))
    assert auc["change"] == pytest.approx(auc["external"] - auc["internal"])
    internal = json.loads((out / "internal/metrics.json").read_text())["tasks"]["malignancy"]
    outside = json.loads((out / "external/metrics.json").read_text())["tasks"]["malignancy"]
    # thresholds come from the run's internal validation split, the same for both sets
    assert internal["youden_threshold"] == outside["youden_threshold"]
    assert [p["threshold"] for p in internal["operating_points"]] == \
        [p["threshold"] for p in outside["operating_points"]]
    assert all(p["chosen_on"] == "validation" for p in outside["operating_points"])
    text = (out / "validation.md").read_text()
    assert f"all {len(frame)} rows of the manifest" in text
    assert "## Breast cancer" in text and "## ALNM" in text and "## malignancy" not in text
    assert "| Breast cancer | all |" in (out / "external" / "report.md").read_text()
    assert set(table.loc[table.task == "malignancy", "display_name"]) == {"Breast cancer"}
    assert band and set(band) == {50}  # both reports' ROC bands follow --bootstrap
    assert "WARNING" not in text


def test_validate_warns_when_external_patients_are_the_runs_own(run, phantoms, tmp_path):
    result = invoke("validate", run, phantoms, "--out", tmp_path / "v", "--bootstrap", 20)
    assert result.exit_code == 0, result.output
    assert re.search(r"WARNING: \d+ external image\(s\) have patient ids of the run's own split "
                     r"\(\d+ train", result.output)


def test_validate_names_a_task_without_external_labels(run, external, tmp_path):
    frame = pd.read_csv(external)
    frame["alnm"] = pd.NA
    bare = tmp_path / "bare.csv"
    frame.assign(image=[os.path.join(external.parent, p) for p in frame["image"]],
                 annotation=[os.path.join(external.parent, p) for p in frame["annotation"]]
                 ).to_csv(bare, index=False)
    result = invoke("validate", run, bare, "--out", tmp_path / "v", "--bootstrap", 20)
    assert result.exit_code != 0 and "alnm" in result.output
    result = invoke("validate", run, bare, "--out", tmp_path / "v", "--bootstrap", 20,
                    "--skip-unlabelled")
    assert result.exit_code == 0, result.output
    assert "Not compared (no external labels): alnm" in (tmp_path / "v/validation.md").read_text()


def test_model_card_has_every_section_and_its_figures(run, external, tmp_path):
    invoke("calibrate", run)
    assert invoke("validate", run, external, "--out", tmp_path / "v", "--bootstrap", 20).exit_code == 0
    card = tmp_path / "card" / "card.md"
    result = invoke("report", run, "--out", card, "--by", "view", "--validation", tmp_path / "v",
                    "--bootstrap", 20)
    assert result.exit_code == 0, result.output
    text = card.read_text()
    sections = re.findall(r"^## (.+)$", text, flags=re.M)
    assert sections == ["Contents", "Intended use", "Model", "Data and split",
                        "Performance (internal test)", "Calibration", "Clinical utility",
                        "Subgroups", "External validation", "Shortcut audit", "Limitations",
                        "Factors", "Ethical considerations", "Licence", "Authors and contact",
                        "Citation"]
    twin = json.loads((card.parent / "card.json").read_text(), parse_constant=pytest.fail)
    assert list(twin["sections"]) == sections[1:] and twin["factors_evaluated"] == ["view"]
    assert 0 <= twin["tasks_evaluated"]["malignancy"]["auc"]["value"] <= 1
    assert "Front. Physiol. 13:882648" in twin["citation"] and "nan" not in text.lower().split()
    assert "calibrated (platt, fitted on the val split" in text
    # tasks by display name, the config's name beside it in the Model table
    assert "| Malignancy | `malignancy` | malignant | - | all |" in text
    # the Performance table's rows (the Model table keeps label sources and parents as named)
    assert re.search(r"^\| ALNM \| malignant = 1 \| \d+ \(\d+\) \|", text, flags=re.M)
    assert not re.search(r"^\| alnm \| malignant = 1 \| \d+ \(", text, flags=re.M)
    assert "### Malignancy by view" in text and "Cochran's Q" in text
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text):
        assert (card.parent / link).is_file(), link  # every figure linked exists
    assert "Not run: pass `--audit`" in text  # a section with nothing says what fills it
