"""make gpu-check's CPU dry run (issue 24): tools/gpu_check.py end to end with tiny sizes on
CPU JAX, in processes that can import only what the GPU machine has plus the bundle's wheels
(TensorFlow, Matplotlib and the rest are blocked), on a pack whose images are gone.
So the one call a lent GPU gets cannot rot between loans."""

import json
import os
import subprocess
import sys
import zipfile

import pandas as pd
import pytest

from tests.conftest import REPO
from tools.gpu_bundle import MACHINE, WHEELS, make_pack, wheel_name_version
from tools.gpu_check import ANCHORS, Check, parse_args, plan_epochs, run_cost, summary

# Put first on PYTHONPATH, it makes every process of the check a GPU machine's: a module
# whose distributions are neither the machine's nor the bundle's cannot be imported.
SITECUSTOMIZE = r"""
import sys
from importlib import metadata

from tools.gpu_bundle import MACHINE, WHEELS

_allowed = {n.lower().replace("_", "-") for n in MACHINE + WHEELS}
_owners = metadata.packages_distributions()


class _GpuMachine:
    def find_spec(self, name, path=None, target=None):
        owners = {d.lower().replace("_", "-") for d in _owners.get(name.partition(".")[0], [])}
        if owners and not owners & _allowed:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the GPU machine)",
                                      name=name)
        return None


sys.meta_path.insert(0, _GpuMachine())
"""

TINY = ["data.image_size=32", "model.backbone=resnet_small", "model.small_widths=[8,16]",
        "model.small_blocks=[1,1]", "train.batch_size=8"]


def _wheel(folder, name, version, module=None):
    """A minimal wheel: a module and its dist-info."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        if module:
            archive.writestr(f"{module}/__init__.py", "VALUE = 1\n")
        info = f"{name}-{version}.dist-info"
        archive.writestr(f"{info}/METADATA",
                         f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n")
        archive.writestr(f"{info}/RECORD", "")
    return path


def test_plan_epochs_fits_the_time_left():
    # 300 s left, 10 kept, slack 1.1: 263.6 s; 40 fixed -> 223.6 s of 2 s epochs
    assert plan_epochs(300, 40, 2.0, 200) == 111
    assert plan_epochs(300, 40, 0.5, 200) == 200  # capped at the paper's epochs
    assert plan_epochs(50, 60, 1.0, 200) == 0  # not even the fixed cost fits
    assert run_cost(40, 2.0, 111) <= 300 - 10 < run_cost(40, 2.0, 112)


def test_a_failed_stage_is_reported_and_the_check_goes_on(tmp_path):
    check = Check(parse_args(["--out", str(tmp_path), "--budget", "60"]))

    def bench():
        raise RuntimeError("usmtl bench train exited with 1")

    result = check.stage("bench", bench)
    check.stage("versions", lambda: {"versions": {"jax": "0.0"}, "nvidia_smi": "none"})
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["failed"] == ["bench"] and check.failed
    assert result["error"] == "RuntimeError: usmtl bench train exited with 1"
    assert saved["stages"]["versions"]["versions"] == {"jax": "0.0"}
    text = summary(saved)
    assert "bench train: RuntimeError: usmtl bench train exited with 1" in text
    assert "fit probe: not run" in text and "failed stages: bench" in text


def test_wheel_names():
    assert wheel_name_version("markdown_it_py-4.3.0-py3-none-any.whl") == ("markdown_it_py", "4.3.0")
    assert wheel_name_version(
        "optree-0.20.0-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl") == \
        ("optree", "0.20.0")
    with pytest.raises(ValueError, match="Received: 'keras.tar.gz'"):
        wheel_name_version("keras.tar.gz")


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu_jax(tmp_path):
    pytest.importorskip("jax")
    from usmtl.data.phantoms import make_phantoms

    # The pack, made as make gpu-bundle makes BUS-BRA's (split stored); then the images go.
    images = tmp_path / "images"
    make_phantoms(str(images), n_patients=60, size=64, seed=3, progress=False)
    pack = tmp_path / "tiny.pack"
    made = make_pack(str(images / "manifest.csv"), os.path.join(REPO, "configs", "paper.yaml"),
                     str(pack), str(tmp_path / "split"), ["data.image_size=32"])
    assert set(made["split"]) == {"train", "val", "test"}
    images.rename(tmp_path / "gone")

    bundle = tmp_path / "bundle"
    (bundle / "wheels").mkdir(parents=True)
    _wheel(bundle / "wheels", "gpu_check_probe", "1.0", module="gpu_check_probe")
    _wheel(bundle / "wheels", "numpy", "0.0.1")  # present: never unpacked over the real one
    sim = tmp_path / "sim"
    sim.mkdir()
    (sim / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out, site = tmp_path / "out", tmp_path / "site"
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join([str(sim), str(REPO)])
    command = [sys.executable, os.path.join("tools", "gpu_check.py"), "--out", str(out),
               "--bundle", str(bundle), "--pack", str(pack),
               "--config", os.path.join("configs", "paper.yaml"), "--site", str(site),
               "--work", str(tmp_path / "work"), "--budget", "1200", "--bench-batch", "4",
               "--bench-precision", "float32", "--bench-steps", "2", "--bench-warmup", "1",
               "--probe-epochs", "2", "--max-epochs", "2",
               "--variants", "multitask-hl,single-alnm"]
    for item in TINY:
        command += ["--set", item]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    report = json.loads((out / "gpu_check.json").read_text())
    stages = report["stages"]
    assert report["failed"] == []
    import numpy

    assert stages["install"]["installed"] == ["gpu_check_probe 1.0"]
    assert f"numpy {numpy.__version__}" in stages["install"]["present"]
    assert (site / "gpu_check_probe" / "__init__.py").is_file()
    assert not (site / "numpy").exists()

    bench = stages["bench"]
    assert bench["images_per_s"] > 0 and bench["ms_per_step"] > 0
    assert (bench["backbone"], bench["image_size"], bench["batch_size"], bench["precision"],
            bench["data_on_device"]) == ("resnet_small", 32, 4, "float32", True)
    assert set(bench["vs_anchors"]) == set(ANCHORS)
    shares = [op["share"] for op in bench["top_ops"]]  # the profile of a few more steps
    assert shares and all(0 < x <= 1 for x in shares) and sum(shares) <= 1.0001
    assert shares == sorted(shares, reverse=True)

    probe = stages["probe"]
    assert probe["epochs"] == 2 and probe["platform"] == "cpu"
    assert probe["steady_epoch_s"] > 0 and probe["fixed_s"] >= 0
    assert 0 < probe["steady_train_s"] <= probe["steady_epoch_s"]

    experiment = stages["experiment"]
    assert experiment["epochs_planned"] == 2 and experiment["skipped"] == {}
    assert list(experiment["runs"]) == ["multitask-hl", "single-alnm"]
    hl, alone = experiment["runs"]["multitask-hl"], experiment["runs"]["single-alnm"]
    assert hl["epochs_run"] == alone["epochs_run"] == 2 and hl["backend"] == "jax"
    assert set(hl["test"]) == {"malignancy", "alnm"} and set(alone["test"]) == {"alnm"}
    malignancy, alnm = hl["test"]["malignancy"], hl["test"]["alnm"]
    assert 0 <= malignancy["auc"] <= 1
    # the child within its cohort: the malignant test images only, the same for both runs
    assert alnm["cohort"] == alone["test"]["alnm"]["cohort"] != malignancy["cohort"]
    assert alnm["n_images"] == malignancy["positives"] == alone["test"]["alnm"]["n_images"]

    # the run folders' metrics came back, the checkpoints did not
    run = out / "experiment" / "runs" / "multitask-hl" / "repeat-1"
    assert len(pd.read_csv(run / "history.csv")) == 2
    assert (run / "test_predictions.csv").is_file() and (run / "val_metrics.json").is_file()
    assert (out / "experiment" / "tables.md").is_file() and (out / "bench_train.json").is_file()
    assert not list(out.rglob("*.keras"))

    # only the GPU machine's packages and the bundle's were imported; no TensorFlow
    assert report["tensorflow_imported"] is False
    allowed = {n.lower().replace("_", "-") for n in MACHINE + WHEELS} | {"gpu-check-probe"}
    assert set(report["imported_distributions"]) <= allowed, report["imported_distributions"]

    text = (out / "summary.txt").read_text()
    assert text.strip() in done.stdout
    assert "multitask-hl" in text and "single-alnm" in text and "images/s" in text
    assert "failed stages: none" in text
