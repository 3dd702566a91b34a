"""TensorFlow's start-up noise stays out of usmtl's output unless asked for."""

import os
import subprocess
import sys

import pytest

from tests.conftest import train_tiny_run

pytestmark = pytest.mark.slow

NOISE = ("oneDNN custom operations", "cudart_stub", "cuInit", "absl::InitializeLog")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, phantoms):
    return train_tiny_run(tmp_path_factory.mktemp("run") / "run", phantoms, epochs=1)


def _predict(run, manifest, out, *extra, env=()):
    environ = {k: v for k, v in os.environ.items()
               if k not in ("TF_CPP_MIN_LOG_LEVEL", "USMTL_LOG_LEVEL")}
    environ.update(env)
    command = [sys.executable, "-c", "from usmtl.cli import main; main()", *extra, "predict",
               str(run), str(manifest), "--split", "test", "--out", str(out)]
    return subprocess.run(command, capture_output=True, text=True, env=environ, timeout=300)


def test_quiet_by_default(tiny_run, phantoms, tmp_path):
    result = _predict(tiny_run, phantoms, tmp_path / "p.csv")
    assert result.returncode == 0, result.stderr
    assert not [n for n in NOISE if n in result.stderr + result.stdout], result.stderr
    assert "Wrote" in result.stdout


@pytest.mark.parametrize("how", ["flag", "variable"])
def test_verbose_brings_it_back(tiny_run, phantoms, tmp_path, how):
    extra, env = (("--verbose",), ()) if how == "flag" else ((), {"USMTL_LOG_LEVEL": "info"})
    result = _predict(tiny_run, phantoms, tmp_path / "p.csv", *extra, env=dict(env))
    assert result.returncode == 0, result.stderr
    assert "oneDNN custom operations" in result.stderr


def test_bad_level_is_a_usage_error(tiny_run, phantoms, tmp_path):
    result = _predict(tiny_run, phantoms, tmp_path / "p.csv", env={"USMTL_LOG_LEVEL": "loud"})
    assert result.returncode == 2 and "USMTL_LOG_LEVEL must be one of" in result.stderr
