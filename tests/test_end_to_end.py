"""fit -> predict through the CLI on phantoms, resume, and a short fit on BUS-BRA."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import Interrupt, interrupt_after_epoch, REPO, invoke, tiny_config_dict, write_config

pytestmark = pytest.mark.slow


def test_help_is_instant_and_imports_no_tensorflow():
    code = ("import sys; from click.testing import CliRunner; from usmtl.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
            "assert 'fit' in r.output; print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"


def test_fit_then_predict_on_phantoms(tmp_path, phantoms):
    config = write_config(tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    result = invoke("fit", "--config", config, "--manifest", phantoms, "--out", run,
                    "--set", "train.epochs=2")
    assert result.exit_code == 0, result.output
    assert "Validation metrics" in result.output and "malignancy" in result.output
    for name in ("config.yaml", "split.csv", "run.json", "versions.json", "history.csv",
                 "checkpoints/best.keras", "checkpoints/last.keras", "val_metrics.json",
                 "val_predictions.csv", "logs"):
        assert (run / name).exists(), name
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == 2
    assert len(pd.read_csv(run / "history.csv")) == 2
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    metrics = json.loads((run / "val_metrics.json").read_text())
    assert set(metrics) == {"malignancy", "alnm", "aln_ge_2"}

    # The run's split has no patient on two sides.
    split = pd.read_csv(run / "split.csv")
    assert split["patient_id"].is_unique and set(split["split"]) <= {"train", "val", "test"}

    out = tmp_path / "test.csv"
    result = invoke("predict", run, phantoms, "--split", "test", "--out", out)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    test_patients = set(split.loc[split["split"] == "test", "patient_id"].astype(str))
    assert set(frame["patient_id"].astype(str)) == test_patients
    for task in ("malignancy", "alnm", "aln_ge_2"):
        assert frame[f"p_{task}"].between(0, 1).all()
        assert f"y_{task}" in frame
    assert {"hierarchy_violation", "violated_edges", "hierarchy_excess"} <= set(frame.columns)

    manifest = pd.read_csv(phantoms)
    image = os.path.join(os.path.dirname(phantoms), manifest["image"][0])
    result = invoke("predict", run, image, "--box", "10,10,60,50")
    assert result.exit_code == 0, result.output
    assert "p_malignancy" in result.output

    # A finished run is never overwritten.
    result = invoke("fit", "--config", config, "--manifest", phantoms, "--out", run)
    assert result.exit_code == 2 and "--resume" in result.output


def test_interrupted_fit_resumes_where_it_stopped(tmp_path, phantoms):
    from usmtl.config import config_from_dict
    from usmtl.training.fit import fit

    cfg = config_from_dict(tiny_config_dict(train={"epochs": 3}))
    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        fit(cfg, str(phantoms), str(run), verbose=0, callbacks=[interrupt_after_epoch(1)])
    assert json.loads((run / "run.json").read_text())["status"] == "running"
    assert (run / "backup").is_dir()
    result = fit(None, None, str(run), resume=True, verbose=0)
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2]  # epochs 1-2 kept, only epoch 3 trained again
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert result.epochs == 3
    # Resuming a finished run does nothing and returns its result.
    again = fit(None, None, str(run), resume=True, verbose=0)
    assert again.val_metrics == result.val_metrics


def test_bad_manifest_writes_no_run_directory(tmp_path, phantoms):
    bad = pd.read_csv(phantoms, dtype=str)
    bad.loc[3, "malignant"] = "7"
    bad_path = tmp_path / "bad.csv"
    # paths are relative to the manifest's folder
    bad["image"] = [os.path.join(os.path.dirname(phantoms), p) for p in bad["image"]]
    bad["annotation"] = [os.path.join(os.path.dirname(phantoms), p) for p in bad["annotation"]]
    bad.to_csv(bad_path, index=False)
    run = tmp_path / "run"
    result = invoke("fit", "--config", write_config(tmp_path / "c.yaml"), "--manifest", bad_path,
                    "--out", run)
    assert result.exit_code == 2
    assert "line 5" in result.output and "'7'" in result.output
    assert not run.exists()


def test_split_file_is_reused(tmp_path, phantoms):
    config = write_config(tmp_path / "c.yaml", train={"epochs": 1})
    first, second = tmp_path / "a", tmp_path / "b"
    assert invoke("fit", "--config", config, "--manifest", phantoms, "--out", first).exit_code == 0
    result = invoke("fit", "--config", config, "--manifest", phantoms, "--out", second,
                    "--split-file", first, "--set", "data.split_seed=99")
    assert result.exit_code == 0, result.output
    assert (first / "split.csv").read_text() == (second / "split.csv").read_text()


def test_small_model_learns_phantoms_well_above_chance(tmp_path):
    """The demo's promise: phantoms are learnable by a small CNN in a few epochs."""
    from usmtl.config import config_from_dict
    from usmtl.data.phantoms import make_phantoms
    from usmtl.training.fit import fit

    make_phantoms(str(tmp_path / "data"), n_patients=160, size=96, seed=3, progress=False)
    cfg = config_from_dict(tiny_config_dict(
        data={"image_size": 48, "val_fraction": 0.25},
        model={"small_widths": [16, 32, 64], "small_blocks": [1, 1, 1]},
        train={"epochs": 12, "batch_size": 32, "checkpoint": "last"}))
    result = fit(cfg, str(tmp_path / "data" / "manifest.csv"), str(tmp_path / "run"), verbose=0)
    # The last epoch: the "best" one by mean validation AUC can be an early epoch that the
    # noisy child AUCs favour (seen: epoch 3, malignancy 0.75). Measured at epoch 12 over
    # seeds 0-2: malignancy 0.97-0.995.
    assert result.val_metrics["malignancy"]["auc"] >= 0.85
    # ALNM is scored within the malignant masses (about 18 validation images), as the paper
    # does, no longer over benign masses that made it easy: measured 0.687-0.697 over seeds 0-2.
    assert result.val_metrics["alnm"]["n"] < result.val_metrics["malignancy"]["n"]
    assert result.val_metrics["alnm"]["auc"] >= 0.6


@pytest.mark.busbra
def test_busbra_import_and_short_fit(tmp_path, busbra_root):
    from usmtl.config import config_from_dict
    from usmtl.data.importers import import_busbra
    from usmtl.training.fit import fit

    manifest = tmp_path / "busbra.csv"
    frame = import_busbra(str(busbra_root), str(manifest), progress=False, duplicates=False, log=None)
    assert len(frame) == 1875
    assert (frame.loc[frame["idc"].astype(int) == 1, "malignant"].astype(int) == 1).all()
    # A subset: 40 patients, both classes.
    patients = frame.groupby("patient_id")["malignant"].max().reset_index()
    rng = np.random.default_rng(0)
    chosen = set(rng.choice(patients.loc[patients["malignant"].astype(int) == 1, "patient_id"], 20,
                            replace=False)) | set(rng.choice(
        patients.loc[patients["malignant"].astype(int) == 0, "patient_id"], 20, replace=False))
    subset = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    subset = subset[subset["patient_id"].isin(chosen)]
    subset.to_csv(tmp_path / "subset.csv", index=False)
    cfg = config_from_dict(tiny_config_dict(
        tasks=yaml.safe_load((REPO / "configs" / "busbra.yaml").read_text())["tasks"],
        data={"image_size": 64, "val_fraction": 0.2},
        # The small ResNet: ResNet50 from scratch is tests/test_from_scratch.py's.
        model={"backbone": "resnet_small", "weights": "none"},
        train={"epochs": 1, "batch_size": 8}))
    result = fit(cfg, str(tmp_path / "subset.csv"), str(tmp_path / "run"), verbose=0)
    assert set(result.val_metrics) == {"malignancy", "birads5"}
    assert result.val_metrics["malignancy"]["n"] > 0


@pytest.mark.parametrize("group", [[], ["import"], ["radiomics"], ["bench"]])
def test_help_lists_whole_first_sentences(group):
    """click cut each command's line at the terminal's width with '...'; the listing keeps the
    whole first sentence of every command's help, wrapped."""
    from click.testing import CliRunner

    from usmtl.cli import main

    result = CliRunner().invoke(main, group + ["--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    listing = result.output.split("Commands:")[1]
    assert "..." not in listing
    assert all(line.rstrip().endswith((".", ",", ")")) or not line.strip() or
               line.startswith("    ") for line in listing.splitlines()[-1:])
