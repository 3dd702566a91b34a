"""usmtl fit on JAX without TensorFlow (issue 15): train, resume and predict the quickstart
in a process where TensorFlow is never imported, then open that run under TensorFlow for
predict and a TFLite export, with the same predictions."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO

# Runs with KERAS_BACKEND unset: --backend jax must choose it before Keras is imported.
# TensorFlow is made unimportable first, as on a GPU machine that has JAX only (with it
# installed, Keras itself imports it lazily to check types while saving a model).
SCRIPT = r"""
import json, sys


class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")


sys.meta_path.insert(0, NoTensorFlow())
from click.testing import CliRunner
from tests.conftest import Interrupt, interrupt_after_epoch
from usmtl.backend import use_backend

use_backend("jax")
from usmtl.cli import main
from usmtl.config import load_config
from usmtl.training.fit import fit

manifest, run, out = sys.argv[1:4]
cfg = load_config("quickstart", ["train.epochs=3", "data.image_size=48",
                                 "model.small_widths=[16,32]", "model.small_blocks=[1,1]"])
try:
    fit(cfg, manifest, run, verbose=0, callbacks=[interrupt_after_epoch(1)])
    raise SystemExit("the interrupt did not happen")
except Interrupt:
    pass
status = json.load(open(run + "/run.json"))["status"]
result = fit(None, None, run, resume=True, verbose=0)
predicted = CliRunner().invoke(main, ["predict", "--backend", "jax", run, manifest,
                                      "--split", "test", "--out", out])
assert predicted.exit_code == 0, predicted.output
print(json.dumps({"status_after_interrupt": status, "epochs": result.epochs,
                  "tensorflow_imported": "tensorflow" in sys.modules,
                  "run": json.load(open(run + "/run.json"))}))
"""


@pytest.mark.slow
def test_quickstart_trains_resumes_and_predicts_on_jax_then_opens_under_tensorflow(
        tmp_path, phantoms):
    pytest.importorskip("jax")
    run, jax_csv = tmp_path / "run", tmp_path / "jax.csv"
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(phantoms), str(run), str(jax_csv)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["tensorflow_imported"] is False
    assert report["status_after_interrupt"] == "running"
    assert report["run"]["status"] == "finished" and report["run"]["backend"] == "jax"
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [0, 1, 2]  # epochs 1-2 kept, epoch 3 trained on resume
    versions = json.loads((run / "versions.json").read_text())
    assert versions["keras_backend"] == "jax"

    # The same run, opened in this (TensorFlow) process.
    from usmtl.predict import predict

    jax_frame = pd.read_csv(jax_csv)
    tf_frame = predict(str(run), str(phantoms), split="test")
    columns = [c for c in jax_frame.columns if c.startswith("p_")]
    assert len(columns) == 5 and len(jax_frame) == len(tf_frame) > 10
    assert list(jax_frame["image"]) == list(tf_frame["image"])
    for column in columns:
        assert np.ptp(tf_frame[column]) > 1e-3, f"{column}: constant predictions"
        np.testing.assert_allclose(tf_frame[column], jax_frame[column], atol=1e-5, err_msg=column)

    from usmtl.export import export

    exported = export(str(run), "tflite", str(tmp_path / "tflite"), manifest=str(phantoms))
    assert exported.report["passed"], exported.report
    lite = predict(str(tmp_path / "tflite"), str(phantoms), split="test")
    for column in columns:
        np.testing.assert_allclose(lite[column], jax_frame[column], atol=1e-4, err_msg=column)
