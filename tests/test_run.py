"""usmtl.run: the run directory's layout, create/open/status, the atomic JSON writer, and the
lock (a live holder refuses a second fit at once, a killed one's lock is taken over)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, invoke, write_config
from usmtl.errors import UsmtlError
from usmtl.run import Run, write_json_atomic

SPLIT = {"p1": "train", "p2": "val", "p3": "test"}

HOLD_LOCK = r"""
import sys, time
from usmtl.run import Run
with Run(sys.argv[1]).lock():
    time.sleep(float(sys.argv[2]))
"""

TRY_LOCK = r"""
import sys
from usmtl.errors import UsmtlError
from usmtl.run import Run
try:
    with Run(sys.argv[1]).lock():
        print("ACQUIRED")
except UsmtlError as exc:
    print("REFUSED", exc)
"""


def python(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-c", *map(str, args)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def wait_for_holder(path, proc, timeout=60.0) -> None:
    """Until ``proc`` holds the lock of ``path`` (its PID is in run.lock.json)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (Run(path).holder() or {}).get("pid") == proc.pid:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the holder exited: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("the holder did not take the lock in time")


@pytest.fixture
def holder(tmp_path):
    """A process that holds the lock of ``tmp_path / 'run'`` (for up to two minutes)."""
    procs = []

    def start(path):
        proc = python(HOLD_LOCK, path, 120)
        procs.append(proc)
        wait_for_holder(path, proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def try_lock(path) -> str:
    out = subprocess.run([sys.executable, "-c", TRY_LOCK, str(path)], cwd=REPO, text=True,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


# ---------------------------------------------------------------------------------------
# Layout, create, open, status
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("attribute, name", [
    ("config_path", "config.yaml"), ("split_path", "split.csv"), ("run_file", "run.json"),
    ("versions_path", "versions.json"), ("history_path", "history.csv"), ("logs_dir", "logs"),
    ("best_model", "checkpoints/best.keras"), ("last_model", "checkpoints/last.keras"),
    ("best_state_path", "checkpoints/best.json"), ("backup_dir", "backup"),
    ("cache_dir", "cache"), ("val_predictions_path", "val_predictions.csv"),
    ("val_metrics_path", "val_metrics.json"), ("lock_path", ".lock"),
])
def test_layout_keeps_the_file_names_of_existing_runs(tmp_path, attribute, name):
    assert getattr(Run(tmp_path), attribute) == os.path.join(str(tmp_path), *name.split("/"))


@pytest.mark.parametrize("which, name", [("best", "best.keras"), ("last", "last.keras")])
def test_model_paths(tmp_path, which, name):
    run = Run(tmp_path)
    assert run.model_path(which) == os.path.join(str(tmp_path), "checkpoints", name)
    assert run.predictions_path("test") == os.path.join(str(tmp_path), "test_predictions.csv")
    with pytest.raises(UsmtlError, match="no checkpoints"):
        run.open_model(which)
    with pytest.raises(UsmtlError, match="Received: 'middle'"):
        run.model_path("middle")


@pytest.mark.parametrize("mark, status", [
    (lambda run: run.mark_finished(seconds=1.5), "finished"),
    (lambda run: run.mark_failed(ValueError("boom")), "failed"),
])
def test_create_open_status_round_trip(tmp_path, tiny_config, mark, status):
    path = tmp_path / "run"
    created = Run.create(path, tiny_config, "data/manifest.csv", SPLIT, kind="test")
    for name in ("config.yaml", "split.csv", "run.json"):
        assert (path / name).is_file(), name
    run = Run.open(path)
    assert run.status == "running"
    assert run.manifest_path == os.path.abspath("data/manifest.csv")
    assert run.config().name == tiny_config.name == run.info()["config_name"]
    assert run.split() == SPLIT and run.info()["kind"] == "test"
    mark(created)
    info = Run.open(path).info()
    assert Run.open(path).status == status == info["status"]
    assert ("error" in info) == (status == "failed")
    if status == "failed":
        assert info["error"] == "ValueError: boom"
        run.mark_running()
        assert run.status == "running" and "error" not in run.info()
    else:
        assert info["seconds"] == 1.5 and "finished" in info


@pytest.mark.parametrize("entry", ["notes.txt", "checkpoints"])
def test_create_refuses_a_non_empty_directory(tmp_path, tiny_config, entry):
    path = tmp_path / "run"
    path.mkdir()
    (path / "notes.txt").write_text("x") if entry == "notes.txt" else (path / entry).mkdir()
    with pytest.raises(UsmtlError, match="pass --resume to continue it, or choose another --out"):
        Run.create(path, tiny_config, "m.csv", SPLIT)
    assert sorted(os.listdir(path)) == [entry]


def test_create_ignores_only_the_lock_files(tmp_path, tiny_config):
    path = tmp_path / "run"
    with Run(path).lock():  # a fit creates its run under the lock
        Run.create(path, tiny_config, "m.csv", SPLIT)
    assert Run.open(path).status == "running"


@pytest.mark.parametrize("layout", ["missing", "empty", "config only"])
def test_open_refuses_a_folder_that_is_not_a_run(tmp_path, layout):
    path = tmp_path / "folder"
    if layout != "missing":
        path.mkdir()
    if layout == "config only":
        (path / "config.yaml").write_text("name: x\n")
    with pytest.raises(UsmtlError) as info:
        Run.open(path)
    message = str(info.value)
    assert "Not a run directory" in message and message.endswith(f"Received: {path}")
    assert Run(path).status is None


# ---------------------------------------------------------------------------------------
# The atomic writer
# ---------------------------------------------------------------------------------------


def test_write_json_atomic_writes_numpy_values(tmp_path):
    import numpy as np

    target = tmp_path / "a.json"
    write_json_atomic(target, {"n": np.int64(3), "auc": np.float32(0.5), "v": np.arange(2)})
    assert json.loads(target.read_text()) == {"n": 3, "auc": 0.5, "v": [0, 1]}
    assert os.listdir(tmp_path) == ["a.json"]


@pytest.mark.parametrize("failing", ["json.dump", "os.replace"])
def test_write_json_atomic_failure_keeps_the_old_file(tmp_path, monkeypatch, failing):
    import usmtl.run

    target = tmp_path / "run.json"
    write_json_atomic(target, {"status": "running"})
    before = target.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    module, name = failing.split(".")
    monkeypatch.setattr(getattr(usmtl.run, module), name, boom)
    with pytest.raises(UsmtlError, match=f"Could not write {target}.*disk full"):
        write_json_atomic(target, {"status": "finished"})
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["run.json"]  # no temporary file left


# ---------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------


def test_second_lock_fails_fast_naming_the_holder(tmp_path, holder):
    path = tmp_path / "run"
    proc = holder(path)
    started = time.time()
    with pytest.raises(UsmtlError) as info:
        with Run(path).lock():
            pass
    assert time.time() - started < 5  # refused at once, no waiting
    message = str(info.value)
    assert f"PID {proc.pid} on {socket.gethostname()}" in message and "in use" in message
    assert try_lock(path).startswith(f"REFUSED Run directory {path} is in use: PID {proc.pid}")
    assert Run(path).holder()["pid"] == proc.pid  # the refused attempts changed nothing


@pytest.mark.parametrize("resume", [True, False])
def test_fit_command_on_a_locked_run_fails_fast(tmp_path, tiny_config, holder, resume):
    path = tmp_path / "run"
    Run.create(path, tiny_config, str(tmp_path / "manifest.csv"), SPLIT)
    proc = holder(path)
    before = snapshot(path)
    args = ["--resume"] if resume else ["--config", write_config(tmp_path / "c.yaml"),
                                        "--manifest", tmp_path / "manifest.csv"]
    started = time.time()
    result = invoke("fit", "--out", path, *args)
    assert time.time() - started < 30
    assert result.exit_code == 2, result.output
    assert f"is in use: PID {proc.pid} on {socket.gethostname()}" in result.output
    assert snapshot(path) == before


def test_fit_on_a_locked_directory_writes_nothing(tmp_path, tiny_config, holder, phantoms):
    from usmtl.training.fit import fit

    path = tmp_path / "run"
    proc = holder(path)
    before = snapshot(path)
    assert sorted(before) == [".lock", "run.lock.json"]
    with pytest.raises(UsmtlError, match=f"PID {proc.pid}"):
        fit(tiny_config, str(phantoms), str(path), verbose=0)
    assert snapshot(path) == before


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path, holder, capfd):
    path = tmp_path / "run"
    proc = holder(path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert Run(path).holder()["pid"] == proc.pid  # left behind by the killed process
    with Run(path).lock():
        assert Run(path).holder()["pid"] == os.getpid()
        assert try_lock(path).startswith(f"REFUSED Run directory {path} is in use: PID {os.getpid()}")
    err = capfd.readouterr().err
    assert f"taking over the lock of {path} left by PID {proc.pid}" in err
    assert "no longer running" in err
    assert Run(path).holder() is None and try_lock(path) == "ACQUIRED"


def test_lock_is_reentrant_and_held_until_the_outer_block_ends(tmp_path):
    run = Run(tmp_path / "run")
    with run.lock():
        with run.lock():
            pass
        assert try_lock(run.path).startswith("REFUSED")
    assert try_lock(run.path) == "ACQUIRED"


def test_fit_holds_the_lock_while_training_and_marks_errors_failed(tmp_path, tiny_config,
                                                                   phantoms, monkeypatch):
    from usmtl.training import fit as fit_module
    from usmtl.training import phases

    path = tmp_path / "run"
    seen = []

    def failing_train(cfg, data, run, *args):
        seen.append((Run(path).holder() or {}).get("pid"))
        raise UsmtlError("an image cannot be read")

    monkeypatch.setattr(phases, "train_run", failing_train)
    with pytest.raises(UsmtlError, match="cannot be read"):
        fit_module.fit(tiny_config, str(phantoms), str(path), verbose=0)
    assert seen == [os.getpid()]
    info = Run.open(path).info()
    assert info["status"] == "failed" and "an image cannot be read" in info["error"]
    assert Run(path).holder() is None  # released

    def resumed_train(cfg, data, run, *args):
        seen.append((run.status, (Run(path).holder() or {}).get("pid")))
        return 1.0

    monkeypatch.setattr(phases, "train_run", resumed_train)
    result = fit_module.fit(None, None, str(path), resume=True, verbose=0)
    assert seen[-1] == ("running", os.getpid()) and result.seconds == 1.0
    assert "error" not in Run(path).info()


# ---------------------------------------------------------------------------------------
# Who imports the trainer
# ---------------------------------------------------------------------------------------


def test_readers_of_runs_do_not_import_the_trainer():
    code = ("import sys; import usmtl.predict, usmtl.evaluation.evaluate, usmtl.export, "
            "usmtl.radiomics.model, usmtl.explain, usmtl.bench, usmtl.run; "
            "print('usmtl.training.fit' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("folder", ["predict.py", "evaluation", "radiomics", "explain", "export",
                                    "bench.py", "run.py", "data"])
def test_no_reader_imports_the_trainer_even_lazily(folder):
    root = REPO / "usmtl" / folder
    files = [root] if root.is_file() else sorted(root.rglob("*.py"))
    assert files
    for file in files:
        text = file.read_text()
        assert "from usmtl.training.fit import" not in text, file
        assert "import usmtl.training.fit" not in text, file


@pytest.mark.parametrize("kind", ["lambda", "garbage"])
def test_a_model_file_keras_refuses_is_a_clean_error(tmp_path, kind):
    """An untrusted .keras (a Lambda layer would run code) or a broken one: a UsmtlError
    naming the file, never a traceback, and nothing runs."""
    import keras

    from usmtl.run import load_keras_model

    path = tmp_path / "model.keras"
    if kind == "lambda":
        inputs = keras.Input((4,))
        keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(path)
    else:
        path.write_bytes(b"not a zip")
    with pytest.raises(UsmtlError, match=r"Cannot load the model file .*model\.keras"):
        load_keras_model(str(path))
