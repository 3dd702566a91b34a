"""Issue 13, failing safe in training: one pre-check for every command, unreadable images
inside tf.data, non-finite losses, one-class tasks, crash-safe checkpoints and backups, and
SIGINT/SIGTERM during fit."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pandas as pd
import pytest

from tests.conftest import Interrupt, interrupt_after_epoch, REPO, invoke, tiny_config_dict, write_config
from usmtl.errors import ImageReadError, ManifestError, UsmtlError

HEADER = ["image", "patient_id", "malignant", "alnm", "aln_count", "x_min", "y_min", "x_max", "y_max"]


def png(path, height=64, width=64, value=128):
    cv2.imwrite(str(path), np.full((height, width), value, np.uint8))
    return str(path)


def dicom_without_pixels(path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientID, ds.Modality = "p", "US"
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.save_as(str(path), enforce_file_format=True)
    return str(path)


def broken_files(folder):
    """The undecodable files a new user met: {kind: path}."""
    good = png(folder / "source.png")
    (folder / "zero.png").write_bytes(b"")
    (folder / "truncated.png").write_bytes(open(good, "rb").read()[:60])
    (folder / "text.png").write_text("this is a text file, not a PNG\n")
    return {"zero": str(folder / "zero.png"), "truncated": str(folder / "truncated.png"),
            "text": str(folder / "text.png"), "dicom": dicom_without_pixels(folder / "nopix.dcm")}


def phantom_frame(phantoms):
    """The phantoms' manifest with absolute paths (a copy can live anywhere)."""
    frame = pd.read_csv(phantoms, dtype=str, keep_default_na=False)
    for column in ("image", "annotation"):
        frame[column] = [str(phantoms.parent / p) for p in frame[column]]
    return frame


def lines_of(problems):
    import re

    return sorted(int(re.search(r"\bline (\d+)\b", p).group(1)) for p in problems)


def tiny_cfg(**train):
    from usmtl.config import config_from_dict

    return config_from_dict(tiny_config_dict(train={"epochs": 2, **train}))


def run_info(run):
    return json.loads((run / "run.json").read_text())


def history_epochs(run):
    return list(pd.read_csv(run / "history.csv")["epoch"])


# ---------------------------------------------------------------------------------------
# 1. One pre-check for every command
# ---------------------------------------------------------------------------------------


def test_require_usable_lists_every_problem_by_manifest_line(tmp_path):
    from usmtl.data.prepare import require_usable

    png(tmp_path / "good.png")
    broken = broken_files(tmp_path)
    rows = [
        ["good.png", "p1", 1, 1, 2, 10, 10, 40, 40],              # 2: fine
        ["good.png", "p2", 0, 0, 0, 10, 10, 100, 40],             # 3: box outside the image
        ["good.png", "p3", 0, 1, "", 10, 10, 40, 40],             # 4: ALNM 1 on a benign mass
        ["good.png", "p4", 1, 0, 3, 10, 10, 40, 40],              # 5: aln_count against alnm
        [broken["zero"], "p5", 0, "", "", 1, 1, 9, 9],            # 6: zero bytes
        [broken["truncated"], "p6", 0, "", "", 1, 1, 9, 9],       # 7: truncated PNG
        [broken["text"], "p7", 0, "", "", 1, 1, 9, 9],            # 8: a text file named .png
        [broken["dicom"], "p8", 0, "", "", 1, 1, 9, 9],           # 9: DICOM without pixel data
    ]
    path = tmp_path / "m.csv"
    pd.DataFrame(rows, columns=HEADER).to_csv(path, index=False)
    with pytest.raises(ManifestError) as info:
        require_usable(str(path), progress=False, warn=None)
    problems = info.value.problems
    assert lines_of(problems) == [3, 4, 5, 6, 7, 8, 9], "\n".join(problems)
    words = {3: "lies outside the 64x64 image", 4: "ALNM positive on a benign mass",
             5: "aln_count=3 disagrees with alnm=0", 6: "the file is empty",
             7: "cannot decode image", 8: "cannot decode image", 9: "no pixel data"}
    for line, text in words.items():
        assert text in next(p for p in problems if f"line {line} " in p), line
    assert "nothing was written" in str(info.value)
    # Only some rows: the others are not looked at.
    assert require_usable(str(path), rows=[0], progress=False, warn=None).path == str(path)


def test_fit_refuses_rows_that_check_rejects_and_writes_nothing(tmp_path, phantoms):
    frame = phantom_frame(phantoms)
    malignant = frame.index[frame["malignant"] == "1"]
    benign = frame.index[frame["malignant"] == "0"]
    for column in ("x_min", "y_min", "x_max", "y_max"):
        frame[column] = ""
    frame.loc[benign[0], ["x_min", "y_min", "x_max", "y_max"]] = ["500", "500", "600", "600"]
    frame.loc[benign[1], "alnm"] = "1"
    frame.loc[malignant[0], ["alnm", "aln_count"]] = ["0", "3"]
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    run = tmp_path / "run"
    result = invoke("fit", "--config", write_config(tmp_path / "c.yaml"), "--manifest", path,
                    "--out", run)
    assert result.exit_code == 2, result.output
    assert "3 problem(s); nothing was written" in result.output
    for row, words in ((benign[0], "lies outside"), (benign[1], "ALNM positive on a benign mass"),
                       (malignant[0], "aln_count=3 disagrees with alnm=0")):
        assert f"line {row + 2} " in result.output and words in result.output
    assert not run.exists()


def test_duplicates_and_word_labels_are_kept_with_warnings(tmp_path, phantoms, capsys):
    from usmtl.data.prepare import prepare_data

    frame = phantom_frame(phantoms)
    frame = pd.concat([frame, frame.iloc[:20]], ignore_index=True)   # 20 duplicated rows
    words = {"1": "yes", "0": "No"}
    frame.loc[:9, "malignant"] = [words[v] for v in frame.loc[:9, "malignant"]]
    path = tmp_path / "m.csv"
    frame.to_csv(path, index=False)
    warnings = []
    data = prepare_data(tiny_cfg(), str(path), warn=warnings.append)
    assert len(data.manifest) == len(frame)  # kept
    duplicated = [w for w in warnings if "duplicated row(s)" in w]
    assert len(duplicated) == 1 and duplicated[0].startswith("m.csv: 20 duplicated row(s)")
    assert "lines 2, 128" in duplicated[0]
    spelled = [w for w in warnings if "is spelled" in w]
    assert len(spelled) == 1 and "on 10 row(s)" in spelled[0] and "lines 2, 3, 4" in spelled[0]
    expected = [1.0 if v == "yes" else 0.0 for v in frame.loc[:9, "malignant"]]
    assert list(data.labels["malignancy"][:10]) == expected
    # `usmtl check` gives the same warnings, and no problem.
    result = invoke("check", path)
    assert result.exit_code == 0, result.output
    assert "20 duplicated row(s)" in result.output and "is spelled" in result.output


def test_root_task_with_one_training_class_is_refused(tmp_path, phantoms):
    from usmtl.training.fit import fit

    frame = phantom_frame(phantoms)
    frame["malignant"] = "1"  # ALNM stays consistent: it is only filled on malignant masses
    path = tmp_path / "m.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(UsmtlError, match=r"Task 'malignancy' cannot be trained: all \d+ known "
                                         r"labels among the training images are 1"):
        fit(tiny_cfg(), str(path), str(tmp_path / "run"), verbose=0)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------
# 2. An image that cannot be read inside tf.data
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["zero", "truncated", "text", "dicom"])
def test_reader_failure_in_tf_data_names_the_file_and_line(tmp_path, kind):
    import tensorflow as tf

    from usmtl.config import DataConfig
    from usmtl.data.manifest import Box
    from usmtl.data.pipeline import decode_failure, roi_images
    from usmtl.data.roi import load_roi

    path = broken_files(tmp_path)[kind]
    with pytest.raises(ImageReadError, match=os.path.basename(path)):
        load_roi(path, Box(1, 1, 9, 9), 0.1, True, 32)
    good = png(tmp_path / "good.png")
    dataset = roi_images([good, path], [Box(1, 1, 9, 9)] * 2, DataConfig(image_size=32),
                         where=["m.csv line 2 (image=good.png)", "m.csv line 3 (image=bad)"])
    with pytest.raises(tf.errors.OpError) as info:
        list(dataset)
    failure = decode_failure(info.value)
    assert failure.startswith("m.csv line 3 (image=bad): ") and path in failure


BYPASS_CHECK = r"""
import sys
import usmtl.data.prepare
usmtl.data.prepare.file_problems = lambda *args, **kwargs: []  # the file changes after the check
from usmtl.cli import main
main(sys.argv[1:])
"""


@pytest.mark.slow
def test_unreadable_image_during_training_fails_the_run_and_a_rerun_starts_clean(tmp_path, phantoms):
    from usmtl.data.prepare import prepare_data
    from usmtl.training.fit import fit

    frame = phantom_frame(phantoms)
    path = tmp_path / "m.csv"
    frame.to_csv(path, index=False)
    config = write_config(tmp_path / "c.yaml", train={"epochs": 1})
    row = int(np.flatnonzero(prepare_data(tiny_cfg(), str(path)).row_split == "train")[0])
    original = frame.at[row, "image"]
    frame.at[row, "image"] = str(tmp_path / "changed.png")
    frame.to_csv(path, index=False)
    (tmp_path / "changed.png").write_bytes(open(original, "rb").read()[:80])  # truncated
    run = tmp_path / "run"
    started = time.time()
    out = subprocess.run([sys.executable, "-c", BYPASS_CHECK, "fit", "--config", config,
                          "--manifest", str(path), "--out", str(run)], cwd=REPO, text=True,
                         capture_output=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 2, out.stderr[-3000:]  # not 134 (abort), not a hang
    assert time.time() - started < 240
    assert f"an image could not be read: m.csv line {row + 2} (image=" in out.stderr
    assert "changed.png" in out.stderr and "Traceback" not in out.stderr
    info = run_info(run)
    assert info["status"] == "failed" and f"line {row + 2}" in info["error"]
    # The file is fixed: the same command (no --resume) clears the failed run and trains.
    shutil.copy(original, tmp_path / "changed.png")
    result = fit(tiny_cfg(epochs=1), str(path), str(run), verbose=0)
    assert run_info(run)["status"] == "finished" and result.epochs == 1
    assert history_epochs(run) == [0]


# ---------------------------------------------------------------------------------------
# 3. Non-finite losses
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_nan_loss_fails_the_run_at_once_and_a_rerun_starts_clean(tmp_path, phantoms):
    config = write_config(tmp_path / "c.yaml")
    run = tmp_path / "run"
    result = invoke("fit", "--config", config, "--manifest", phantoms, "--out", run,
                    "--set", "train.learning_rate=1e38")
    assert result.exit_code == 2, result.output
    assert "Error: Training stopped at epoch 1, batch" in result.output
    assert "the loss is not finite" in result.output
    assert "train.learning_rate=1e+38 is far too high" in result.output
    info = run_info(run)
    assert info["status"] == "failed" and "NonFiniteError" in info["error"]
    assert not list((run / "checkpoints").glob("*.keras")) and not (run / "backup").exists()
    # Nothing was trained: a plain re-run with a sane learning rate starts again.
    result = invoke("fit", "--config", config, "--manifest", phantoms, "--out", run)
    assert result.exit_code == 0, result.output
    assert run_info(run)["status"] == "finished"


def test_finite_guard_stops_on_a_bad_batch_loss_epoch_loss_or_weight():
    import keras

    from usmtl.training.failsafe import NonFiniteError, finite_guard

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="head")])
    guard = finite_guard(lambda epoch, batch, what: f"epoch {epoch + 1} batch {batch}: {what}")
    guard.set_model(model)
    guard.on_epoch_begin(4)
    guard.on_train_batch_end(0, {"loss": 0.5, "a_loss": 0.2})  # finite: nothing happens
    guard.on_epoch_end(4, {"loss": 0.5})
    with pytest.raises(NonFiniteError, match=r"epoch 5 batch 2: the loss is not finite "
                                             r"\(a_loss = inf\)"):
        guard.on_train_batch_end(2, {"loss": 0.5, "a_loss": float("inf")})
    with pytest.raises(NonFiniteError, match="epoch 5 batch None: the loss is not finite"):
        guard.on_epoch_end(4, {"loss": float("nan")})
    kernel, bias = model.get_weights()
    model.set_weights([kernel, np.array([0.0, np.nan], np.float32)])
    with pytest.raises(NonFiniteError, match="the weight .*head.* is not finite"):
        guard.on_epoch_end(4, {"loss": 0.5})


@pytest.mark.slow
def test_nan_after_a_good_epoch_keeps_its_checkpoint_and_backup(tmp_path, phantoms):
    import keras

    from usmtl.run import load_keras_model
    from usmtl.training.fit import fit
    from usmtl.training.failsafe import NonFiniteError, find_backup

    class Explode(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                self.model.optimizer.learning_rate.assign(1e38)

    run = tmp_path / "run"
    with pytest.raises(NonFiniteError, match="Training stopped at epoch 2, batch") as info:
        fit(tiny_cfg(epochs=3), str(phantoms), str(run), verbose=0, callbacks=[Explode()])
    assert "the last good checkpoint is" in str(info.value) and "(epoch 1)" in str(info.value)
    assert run_info(run)["status"] == "failed"
    assert json.loads((run / "checkpoints" / "best.json").read_text())["epoch"] == 1
    assert not (run / "checkpoints" / "last.keras").exists()
    model = load_keras_model(str(run / "checkpoints" / "best.keras"))
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert find_backup(str(run / "backup"))[0] == 1
    assert history_epochs(run) == [0]
    # A run with a trained epoch is never cleared by a plain fit.
    with pytest.raises(UsmtlError, match="pass --resume"):
        fit(tiny_cfg(epochs=3), str(phantoms), str(run), verbose=0)


# ---------------------------------------------------------------------------------------
# 4. One class among a child task's training labels
# ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_child_task_with_one_training_class_is_left_out_of_the_score(tmp_path, phantoms, capfd):
    from usmtl.training.fit import fit

    frame = phantom_frame(phantoms)
    frame.loc[pd.to_numeric(frame["aln_count"], errors="coerce") >= 2, "aln_count"] = "1"
    path = tmp_path / "m.csv"
    frame.to_csv(path, index=False)
    fit(tiny_cfg(epochs=1), str(path), str(tmp_path / "run"), verbose=0)
    err = capfd.readouterr().err
    assert "warning: task 'aln_ge_2': all" in err and "are 0 (aln_count >= 2)" in err
    assert "left out of the best-checkpoint score" in err
    state = json.loads((tmp_path / "run" / "checkpoints" / "best.json").read_text())
    assert "aln_ge_2" not in state["scored"] and "malignancy" in state["scored"]


# ---------------------------------------------------------------------------------------
# 5. Crash-safe checkpoints and backups
# ---------------------------------------------------------------------------------------


def test_write_file_safely_reports_a_full_disk_and_keeps_the_old_file(tmp_path, monkeypatch):
    from usmtl.training import failsafe

    target = tmp_path / "best.keras"
    target.write_bytes(b"old")
    monkeypatch.setattr(failsafe, "free_bytes", lambda folder: 1000)
    with pytest.raises(failsafe.DiskFullError) as info:
        failsafe.write_file_safely(str(target), b"x" * 5000)
    message = str(info.value)
    assert f"Could not write {target}: no space left" in message
    assert "4.9 KB needed, 1000 bytes free" in message
    monkeypatch.undo()

    def half_then_full(f, data, name):
        f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(failsafe, "_write_all", half_then_full)
    with pytest.raises(failsafe.DiskFullError, match=f"Could not write {target}"):
        failsafe.write_file_safely(str(target), b"x" * 5000)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["best.keras"]


def test_incomplete_backups_are_never_loaded(tmp_path):
    import h5py

    from usmtl.training.failsafe import find_backup

    notes = []
    backup = tmp_path / "backup"
    backup.mkdir()
    assert find_backup(str(backup), notes.append) is None
    # A write killed before its rename leaves only a temporary file.
    (backup / ".state-e0001.keras.ab12cd34.tmp").write_bytes(b"PK\x03\x04 partial")
    assert find_backup(str(backup), notes.append) is None
    # A whole archive named by complete.json is found; truncated, it is skipped.
    import zipfile

    with zipfile.ZipFile(backup / "state-e0002.keras", "w") as archive:
        archive.writestr("model.weights.h5", b"w" * 4000)
    size = (backup / "state-e0002.keras").stat().st_size
    (backup / "complete.json").write_text(json.dumps({"epoch": 2, "file": "state-e0002.keras",
                                                      "bytes": size}))
    assert find_backup(str(backup), notes.append) == (2, str(backup / "state-e0002.keras"))
    with open(backup / "state-e0002.keras", "r+b") as f:
        f.truncate(size // 2)
    assert find_backup(str(backup), notes.append) is None
    assert "skipping the backup" in notes[-1] and "bytes" in notes[-1]
    # The backup of keras.callbacks.BackupAndRestore (earlier versions), truncated by a full disk.
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    with h5py.File(legacy / "latest.weights.h5", "w") as f:
        f["layers/dense/vars/0"] = np.ones((200, 200), np.float32)
    (legacy / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    assert find_backup(str(legacy), notes.append) == (3, str(legacy / "latest.weights.h5"))
    data = (legacy / "latest.weights.h5").read_bytes()
    (legacy / "latest.weights.h5").write_bytes(data[: len(data) // 3])
    assert find_backup(str(legacy), notes.append) is None
    assert "cannot be read whole" in notes[-1]


@pytest.mark.slow
def test_full_disk_during_backup_fails_the_run_and_resume_continues(tmp_path, phantoms,
                                                                    monkeypatch):
    from usmtl.training import failsafe
    from usmtl.training.fit import fit

    real = failsafe._write_all

    def full_at_epoch_two(f, data, name):
        if "state-e0002" in name:
            f.write(data[: len(data) // 3])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(f, data, name)

    monkeypatch.setattr(failsafe, "_write_all", full_at_epoch_two)
    run = tmp_path / "run"
    with pytest.raises(UsmtlError) as info:
        fit(tiny_cfg(epochs=3), str(phantoms), str(run), verbose=0)
    message = str(info.value)
    assert f"Could not write {run / 'backup' / 'state-e0002.keras'}: no space left" in message
    assert "needed" in message and "free in" in message
    assert f"resume it with: usmtl fit --resume --out {run}" in message
    info = run_info(run)
    assert info["status"] == "failed" and "DiskFullError" in info["error"]
    assert sorted(os.listdir(run / "backup")) == ["complete.json", "state-e0001.keras"]
    assert failsafe.find_backup(str(run / "backup")) == (1, str(run / "backup" / "state-e0001.keras"))
    monkeypatch.undo()
    result = fit(None, None, str(run), resume=True, verbose=0)
    assert run_info(run)["status"] == "finished" and result.epochs == 3
    assert history_epochs(run) == [0, 1, 2]  # epoch 2's row, logged before the failure, once
    assert not (run / "backup").exists()


@pytest.mark.slow
def test_resume_skips_a_truncated_backup_and_starts_over(tmp_path, phantoms, capfd):
    from usmtl.training.fit import fit

    run = tmp_path / "run"
    with pytest.raises(Interrupt):
        fit(tiny_cfg(epochs=3), str(phantoms), str(run), verbose=0,
            callbacks=[interrupt_after_epoch(1)])
    state = run / "backup" / "state-e0002.keras"
    with open(state, "r+b") as f:
        f.truncate(state.stat().st_size - 100)
    capfd.readouterr()
    fit(None, None, str(run), resume=True, verbose=0)
    assert f"skipping the backup {state} (epoch 2)" in capfd.readouterr().err
    assert history_epochs(run) == [0, 1, 2]  # all three trained again, each logged once
    assert run_info(run)["status"] == "finished"


# ---------------------------------------------------------------------------------------
# 6. SIGINT and SIGTERM
# ---------------------------------------------------------------------------------------


def usmtl_command():
    script = os.path.join(os.path.dirname(sys.executable), "usmtl")
    return [script] if os.path.isfile(script) else [sys.executable, "-m", "usmtl.cli"]


def start_fit(config, manifest, run):
    return subprocess.Popen(
        usmtl_command() + ["fit", "--config", str(config), "--manifest", str(manifest), "--out", str(run)],
        cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        # A background process started by a script ignores SIGINT: restore the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_epochs(run, proc, n=1, timeout=240.0):
    history = run / "history.csv"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if history.is_file() and sum(1 for line in open(history) if line.strip()) > n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"fit ended early: {proc.communicate()}")
        time.sleep(0.02)
    raise AssertionError("no epoch finished in time")


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_signal_during_fit_leaves_a_resumable_run(tmp_path, phantoms, signum, code):
    config = write_config(tmp_path / "c.yaml", train={"epochs": 15, "batch_size": 4})
    run = tmp_path / "run"
    proc = start_fit(config, phantoms, run)
    try:
        wait_for_epochs(run, proc)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    name = signal.Signals(signum).name
    assert proc.returncode == code, err[-3000:]
    assert f"Interrupted by {name}" in err and "Aborted!" not in err and "Traceback" not in err
    assert f"Resume it with: usmtl fit --resume --out {run}\n" in err
    assert run_info(run)["status"] == "running"
    from usmtl.training.failsafe import find_backup

    done = find_backup(str(run / "backup"))[0]
    assert 1 <= done < 15 and history_epochs(run) == list(range(done))
    if signum != signal.SIGINT:
        return
    out = subprocess.run(usmtl_command() + ["fit", "--resume", "--out", str(run)], cwd=REPO,
                         text=True, capture_output=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert run_info(run)["status"] == "finished" and history_epochs(run) == list(range(15))


def test_non_finite_validation_predictions_stop_before_the_epoch_is_kept(tmp_path):
    """Huge but finite weights (a far too high learning rate) can give NaN predictions a whole
    epoch before the loss turns NaN: validation stops the run there, before any checkpoint."""
    from usmtl.run import Run
    from usmtl.training.phases import _make_validation_callback
    from usmtl.training.failsafe import NonFiniteError

    run = Run(tmp_path / "run")
    labels = {"malignancy": np.array([0.0, 1.0, 1.0])}
    nan_predict = lambda dataset: {"malignancy": np.array([[0.2], [np.nan], [0.7]])}  # noqa: E731
    callback = _make_validation_callback(None, labels, run, nan_predict,
                                         explain=lambda epoch, batch, what: f"epoch {epoch + 1}: {what}")
    with pytest.raises(NonFiniteError, match="epoch 1: the validation predictions of malignancy"):
        callback.on_epoch_end(0, {})
    assert not os.path.exists(run.best_model)
    fine = _make_validation_callback(None, labels, run, lambda d: {"malignancy": np.array([0.2, 0.6, 0.7])},
                                     keep_best=False, explain=lambda *a: "unused")
    logs = {}
    fine.on_epoch_end(0, logs)
    assert logs["val_auc"] == 1.0


def test_nan_written_labels_are_unknown_with_a_warning(tmp_path):
    from usmtl.data.manifest import label_spelling_warnings, read_manifest

    frame = pd.DataFrame({"image": ["a.png", "b.png", "c.png"], "patient_id": ["p1", "p2", "p3"],
                          "malignant": ["1", "nan", "NA"], "aln_count": ["None", "2", ""],
                          "x_min": 0, "y_min": 0, "x_max": 4, "y_max": 4})
    frame.to_csv(tmp_path / "m.csv", index=False)
    warnings = label_spelling_warnings(read_manifest(str(tmp_path / "m.csv")))
    assert any("'malignant' is na/nan on 2 row(s), read as unknown" in w and "lines 3, 4" in w
               for w in warnings), warnings
    assert any("'aln_count' is none on 1 row(s)" in w for w in warnings), warnings


def test_a_split_of_another_manifest_is_used_with_a_warning(tmp_path, phantoms):
    from usmtl.config import config_from_dict
    from usmtl.data.prepare import prepare_data

    cfg = config_from_dict(tiny_config_dict())
    own = prepare_data(cfg, str(phantoms), warn=None)
    other = tmp_path / "other-run"
    other.mkdir()
    pd.DataFrame({"patient_id": list(own.split), "split": list(own.split.values())}).to_csv(
        other / "split.csv", index=False)
    (other / "run.json").write_text(json.dumps({"manifest": "/data/another/manifest.csv"}))
    said = []
    prepare_data(cfg, str(phantoms), str(other), warn=said.append)
    assert any("was made for another manifest (/data/another/manifest.csv)" in w for w in said), said
    (other / "run.json").write_text(json.dumps({"manifest": os.path.abspath(phantoms)}))
    said.clear()
    prepare_data(cfg, str(phantoms), str(other), warn=said.append)
    assert not any("another manifest" in w for w in said), said
