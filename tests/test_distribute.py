"""Distributed training through the project's own fit path: two MultiWorkerMirroredStrategy
workers on localhost end with identical weights; MirroredStrategy over two logical CPUs."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

WORKER = r"""
import sys
import numpy as np
{setup}
import keras
from tests.conftest import tiny_config_dict
from usmtl.config import config_from_dict
from usmtl.training.fit import fit

manifest, out, weights_file, strategy = sys.argv[1:5]

class SaveWeights(keras.callbacks.Callback):
    def on_train_end(self, logs=None):
        np.savez(weights_file, *[np.asarray(w) for w in self.model.get_weights()])

cfg = config_from_dict(tiny_config_dict(train={{"epochs": 1, "strategy": strategy}}))
result = fit(cfg, manifest, out, verbose=0, callbacks=[SaveWeights()])
print("FINISHED", result.run_dir, result.epochs)
"""

TWO_LOGICAL_CPUS = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def env(**extra):
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **extra}


def load_weights(path):
    with np.load(path) as f:
        return [f[f"arr_{i}"] for i in range(len(f.files))]


def test_two_workers_end_with_identical_weights(tmp_path, phantoms):
    cluster = {"worker": [f"localhost:{p}" for p in free_ports(2)]}
    out = tmp_path / "run"
    script = WORKER.format(setup="")
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, "-c", script, str(phantoms), str(out),
             str(tmp_path / f"weights{index}.npz"), "multiworker"],
            cwd=REPO, env=env(TF_CONFIG=tf_config), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=240)
            outputs.append((proc.returncode, stdout, stderr))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for code, stdout, stderr in outputs:
        assert code == 0 and "FINISHED" in stdout, stderr[-3000:]
    first, second = (load_weights(tmp_path / f"weights{i}.npz") for i in range(2))
    assert len(first) == len(second) > 0
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=0, atol=0)
    # The chief (worker 0) wrote the run directory; the other worker wrote nowhere there.
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["strategy"] == "multiworker"
    assert run["replicas"] == 2
    assert (out / "checkpoints" / "best.keras").is_file()
    # Training changed the weights: they are not the initial ones.
    assert any(np.abs(w).sum() > 0 for w in first)


def test_mirrored_strategy_over_two_logical_cpus(tmp_path, phantoms):
    out = tmp_path / "run"
    script = WORKER.format(setup=TWO_LOGICAL_CPUS)
    proc = subprocess.run([sys.executable, "-c", script, str(phantoms), str(out),
                           str(tmp_path / "weights.npz"), "mirrored"],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0 and "FINISHED" in proc.stdout, proc.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["strategy"] == "mirrored"
    assert run["replicas"] == 2


def test_fit_with_xla_and_several_steps_per_execution(tmp_path, phantoms):
    """The same loop with the step XLA-compiled and three steps per call."""
    import pandas as pd

    from tests.conftest import tiny_config_dict
    from usmtl.config import config_from_dict
    from usmtl.training.fit import fit

    cfg = config_from_dict(tiny_config_dict(train={"epochs": 2, "jit_compile": True,
                                                   "steps_per_execution": 3}))
    result = fit(cfg, str(phantoms), str(tmp_path / "run"), verbose=0)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["jit_compile"] is True and run["steps_per_execution"] == 3
    assert run["strategy"] == "default" and run["replicas"] == 1
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(history["epoch"]) == [0, 1] and np.isfinite(history["loss"]).all()
    assert set(result.val_metrics) == {"malignancy", "alnm", "aln_ge_2"}
    assert not (tmp_path / "run" / "cache").exists()


def test_fit_command_strategy_and_jit_flags_reach_the_run(tmp_path, phantoms):
    from tests.conftest import invoke, write_config

    config = write_config(tmp_path / "c.yaml", train={"epochs": 1, "jit_compile": True})
    result = invoke("fit", "--config", config, "--manifest", phantoms, "--out", tmp_path / "run",
                    "--strategy", "default", "--no-jit")
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["strategy"] == "default" and run["jit_compile"] is False
    bad = invoke("fit", "--config", config, "--manifest", phantoms, "--out", tmp_path / "bad",
                 "--strategy", "parameter-server")
    assert bad.exit_code != 0 and "parameter-server" in bad.output
