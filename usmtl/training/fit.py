"""The training driver behind ``usmtl fit``.

One order, as in TensorFlow Model Garden's ``train.py``: resolve the config, check the data,
make (or reuse) the patient split, save all of it in the run directory, set the precision
policy, choose the ``tf.distribute`` strategy, build and compile under its scope, train.
Training itself runs in named phases: build inputs, build model, build callbacks, train,
write outputs.

The run directory (:class:`usmtl.run.Run`) holds::

    config.yaml  split.csv  run.json  versions.json  history.csv  logs/ (TensorBoard)
    checkpoints/best.keras (the model kept: best validation AUC, or the last epoch with
    train.checkpoint: last)  checkpoints/last.keras
    val_predictions.csv  val_metrics.json

and is locked while it trains (:meth:`usmtl.run.Run.lock`): a second ``fit`` or
``--resume`` of it is refused at once, naming the process that holds it.

Example:
    >>> from usmtl.config import load_config
    >>> from usmtl.training.fit import fit
    >>> result = fit(load_config("configs/quickstart.yaml"), "demo/manifest.csv",
    ...              "runs/quickstart")  # doctest: +SKIP
    >>> result.val_metrics["malignancy"]["auc"]  # doctest: +SKIP
    0.97
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import shutil
import sys
import time

import numpy as np

from usmtl.config import ExperimentConfig
from usmtl.data.prepare import prepare_data
from usmtl.errors import UsmtlError
from usmtl.evaluation.metrics import binary_metrics
from usmtl.evaluation.predictions import predictions_frame
from usmtl.run import (BEST_STATE, CONFIG_FILE, RUN_FILE, SPLIT_FILE, VAL_METRICS, VERSIONS_FILE,
                       Run, write_csv_atomic)


@dataclasses.dataclass
class FitResult:
    run_dir: str
    val_metrics: dict
    best_epoch: int | None
    epochs: int
    seconds: float


# ---------------------------------------------------------------------------------------
# Versions
# ---------------------------------------------------------------------------------------


def library_versions() -> dict:
    import keras
    import tensorflow as tf

    import usmtl

    return {
        "usmtl": usmtl.__version__, "python": sys.version.split()[0],
        "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
        "keras_backend": keras.backend.backend(), "platform": platform.platform(),
        "devices": [d.name for d in tf.config.list_logical_devices()],
    }


# ---------------------------------------------------------------------------------------
# Validation metrics and the best checkpoint
# ---------------------------------------------------------------------------------------


def _make_validation_callback(dataset, labels: dict, run: Run, predict, keep_best: bool = True):
    import keras

    class ValidationCheckpoint(keras.callbacks.Callback):
        """Per epoch: masked validation AUC and BCE per task into the logs (``val_auc`` is
        their mean), and, with ``keep_best``, ``best.keras`` saved when ``val_auc`` improves
        (``train.checkpoint: best``)."""

        def __init__(self):
            super().__init__()
            self.best = -math.inf
            if os.path.isfile(run.best_state_path):  # resumed run: keep the best so far
                self.best = float(run.read_json(BEST_STATE)["val_auc"])

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            probs = predict(dataset)
            aucs = []
            for name, y in labels.items():
                p = np.clip(np.ravel(probs[name]).astype(float), 1e-7, 1 - 1e-7)
                known = ~np.isnan(y)
                auc = binary_metrics(y, p)["auc"]
                aucs.append(auc)
                logs[f"val_auc_{name}"] = auc
                logs[f"val_loss_{name}"] = float(-np.mean(
                    y[known] * np.log(p[known]) + (1 - y[known]) * np.log(1 - p[known]))) \
                    if known.any() else math.nan
            finite = [a for a in aucs if not math.isnan(a)]
            score = float(np.mean(finite)) if finite else math.nan
            logs["val_auc"] = score
            if keep_best and not math.isnan(score) and score > self.best:
                self.best = score
                self.model.save(run.best_model)
                run.write_json(BEST_STATE, {"epoch": epoch + 1, "val_auc": score})

    return ValidationCheckpoint()


# ---------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------


def fit(cfg: ExperimentConfig | None, manifest_path: str | None, out_dir: str,
        split_file: str | None = None, resume: bool = False, verbose="auto",
        callbacks=()) -> FitResult:
    """Train a model and write a run directory; see the module docstring.

    With ``resume=True`` the run's own config, manifest and split are used, training goes
    on from the last finished epoch, and a finished run is returned as it is. Extra Keras
    ``callbacks`` run after the built-in ones. The run directory is locked from before its
    first file is written (or, resuming, before it is read) to the end of training.

    Raises:
        UsmtlError: a bad config, manifest or split (nothing is written then), a directory
            that is not empty (fresh) or not a run (resume), or one that another process is
            training. An error of usmtl during training marks the run ``failed``.
    """
    extra_callbacks = list(callbacks)
    started = time.time()
    from usmtl.training.loop import is_chief

    chief = is_chief()
    run = Run.open(out_dir) if resume else _new_run(cfg, manifest_path, out_dir, chief)
    data = None if resume else prepare_data(cfg, manifest_path, split_file)  # before any write
    # Only the chief writes (and locks) the run directory; other workers of a multi-worker
    # run write to a temporary one (the standard Keras multi-worker pattern).
    with run.lock() if chief else contextlib.nullcontext():
        if resume and run.status == "finished":
            return _result(run, time.time() - started)
        if resume:
            cfg, data = _resume_run(run, chief)
        write_run = run if chief else Run(_worker_dir(out_dir if resume else None))
        try:
            if not resume:
                Run.create(write_run.path, cfg, manifest_path, data.split)
            try:
                seconds = _train(cfg, data, write_run, verbose, extra_callbacks, started)
            except UsmtlError as exc:
                write_run.mark_failed(exc)
                raise
            result = _result(write_run, seconds)
        finally:
            if write_run is not run:
                shutil.rmtree(write_run.path, ignore_errors=True)
    return dataclasses.replace(result, run_dir=out_dir)


def _new_run(cfg, manifest_path, out_dir, chief) -> Run:
    """The run directory of a fresh fit, refused at once when it is not empty."""
    if cfg is None or manifest_path is None:
        raise UsmtlError("fit needs a config and a manifest (or resume=True)")
    run = Run(out_dir)
    if chief:
        run.require_empty()
    return run


def _resume_run(run: Run, chief: bool):
    """The config and data of a run to resume; a failed run is running again."""
    cfg = run.config()
    data = prepare_data(cfg, run.manifest_path, run.split_path)
    if chief and run.status == "failed":
        run.mark_running()
    return cfg, data


def _worker_dir(resume_from: str | None) -> str:
    """A non-chief worker's temporary run directory; on resume it starts from the chief's
    backup (which then needs a file system shared by the workers)."""
    import tempfile

    path = tempfile.mkdtemp(prefix="usmtl-worker-")
    if resume_from is not None:
        source, target = Run(resume_from), Run(path)
        for name in (CONFIG_FILE, SPLIT_FILE, RUN_FILE, BEST_STATE):
            if os.path.isfile(source.file(name)):
                os.makedirs(os.path.dirname(target.file(name)), exist_ok=True)
                shutil.copy(source.file(name), target.file(name))
        if os.path.isdir(source.backup_dir):
            shutil.copytree(source.backup_dir, target.backup_dir)
    return path


# ---------------------------------------------------------------------------------------
# Training, in phases: inputs, model, callbacks, train, outputs
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Inputs:
    train_ds: object      # tf.data: shuffled, full batches of (image, y, sample_weight)
    val_ds: object        # tf.data: the validation images, in order
    train_images: int
    val_idx: np.ndarray   # manifest rows of the validation images
    val_labels: dict      # {task: labels of the validation images}
    steps: int            # training steps per epoch


def _train(cfg, data, run: Run, verbose, extra_callbacks, started) -> float:
    """Build, train and evaluate into ``run``; returns the run's seconds."""
    from usmtl.training.loop import resolve_precision, resolve_strategy, strategy_name, train

    strategy = resolve_strategy(cfg.train.strategy)  # first: before TF starts its runtime

    import keras

    from usmtl.model.precision import precision_policy

    run.write_json(VERSIONS_FILE, library_versions())
    os.makedirs(run.checkpoints_dir, exist_ok=True)
    keras.utils.set_random_seed(cfg.train.seed)
    precision = resolve_precision(cfg.train.precision)
    with precision_policy(precision):
        inputs = _build_inputs(cfg, data, run)
        model, jit, steps_per_execution = _build_model(cfg, strategy, inputs.steps)
        callbacks = _build_callbacks(cfg, run, inputs, model, extra_callbacks)
        if verbose == "auto":
            verbose = 1 if sys.stdout.isatty() else 2
        train(model, inputs.train_ds, strategy, epochs=cfg.train.epochs,
              steps_per_epoch=inputs.steps, callbacks=callbacks, verbose=verbose,
              steps_per_execution=steps_per_execution, jit_compile=jit)
        _write_outputs(cfg, data, run, model, inputs)
    seconds = time.time() - started
    run.mark_finished(precision=precision, strategy=strategy_name(strategy),
                      replicas=int(strategy.num_replicas_in_sync), jit_compile=bool(jit),
                      steps_per_execution=int(steps_per_execution),
                      train_images=inputs.train_images, val_images=int(len(inputs.val_idx)),
                      seconds=round(seconds, 1))
    return seconds


def _build_inputs(cfg, data, run: Run) -> _Inputs:
    """The training and validation datasets of the split (file cache in ``run/cache``)."""
    from usmtl.data.pipeline import make_dataset

    manifest, rows = data.manifest, data.row_split
    paths, boxes = np.array(manifest.image_paths()), manifest.boxes()

    def subset(name):
        idx = np.flatnonzero(rows == name)
        return idx, paths[idx], [boxes[i] for i in idx], {t: v[idx] for t, v in data.labels.items()}

    train_idx, train_paths, train_boxes, train_labels = subset("train")
    val_idx, val_paths, val_boxes, val_labels = subset("val")
    batch = cfg.train.batch_size
    train_ds = make_dataset(train_paths, train_boxes, train_labels, cfg.data, batch, training=True,
                            seed=cfg.train.seed, balance=cfg.train.balance_classes,
                            cache_dir=run.cache_dir, name="train")
    val_ds = make_dataset(val_paths, val_boxes, None, cfg.data, batch, training=False,
                          cache_dir=run.cache_dir, name="val")
    return _Inputs(train_ds, val_ds, int(len(train_idx)), val_idx, val_labels,
                   max(1, len(train_idx) // batch))


def _build_model(cfg, strategy, steps: int):
    """``(model, jit, steps_per_execution)``: built and compiled under the strategy."""
    from usmtl.model.multitask import build_model
    from usmtl.training.compile import compile_for_training
    from usmtl.training.loop import resolve_jit, resolve_steps_per_execution

    jit = resolve_jit(cfg.train.jit_compile, strategy)
    steps_per_execution = resolve_steps_per_execution(cfg.train.steps_per_execution, steps)
    with strategy.scope():
        # The saved compile config keeps "auto": a model trained with XLA on a GPU does
        # not force XLA on the CPU that loads it. The loop gets the resolved value.
        model = compile_for_training(build_model(cfg), cfg, steps, "auto", steps_per_execution)
    return model, jit, steps_per_execution


def _build_callbacks(cfg, run: Run, inputs: _Inputs, model, extra_callbacks) -> list:
    """Backup (to resume), validation and best checkpoint, early stopping, CSV history and
    TensorBoard, then the caller's callbacks."""
    import keras

    from usmtl.training.loop import predict_function

    callbacks = [keras.callbacks.BackupAndRestore(run.backup_dir)]
    if len(inputs.val_idx):
        callbacks.append(_make_validation_callback(inputs.val_ds, inputs.val_labels, run,
                                                   predict_function(model),
                                                   keep_best=cfg.train.checkpoint == "best"))
        if cfg.train.early_stopping > 0:
            callbacks.append(keras.callbacks.EarlyStopping(
                monitor="val_auc", mode="max", patience=cfg.train.early_stopping))
    return callbacks + [
        keras.callbacks.CSVLogger(run.history_path, append=True),
        keras.callbacks.TensorBoard(run.logs_dir, write_graph=False, profile_batch=0),
    ] + list(extra_callbacks)


def _write_outputs(cfg, data, run: Run, model, inputs: _Inputs) -> None:
    """The last and the kept checkpoint, validation predictions and metrics; the file cache
    goes (a finished run does not keep gigabytes of crops)."""
    model.save(run.last_model)
    if cfg.train.checkpoint == "last" or not os.path.isfile(run.best_model):
        # train.checkpoint: last, or no validation set, or no AUC ever defined: the model
        # kept is the last epoch's.
        model.save(run.best_model)
        run.write_json(BEST_STATE, {"epoch": cfg.train.epochs, "val_auc": None, "checkpoint": "last"})
    if len(inputs.val_idx):
        _write_validation(data, run, inputs)
    # A file cache (data.cache disk, or auto on a large data set) is only needed to resume.
    shutil.rmtree(run.cache_dir, ignore_errors=True)


def _write_validation(data, run: Run, inputs: _Inputs) -> None:
    """``val_predictions.csv`` and ``val_metrics.json`` of the kept checkpoint."""
    from usmtl.training.loop import predict_function

    probs = predict_function(run.open_model("best"))(inputs.val_ds)
    idx, manifest = inputs.val_idx, data.manifest
    frame = predictions_frame(manifest.frame["image"].to_numpy()[idx], manifest.patient_ids()[idx],
                              ["val"] * len(idx), probs, inputs.val_labels, data.graph.edges)
    write_csv_atomic(run.val_predictions_path, frame)
    metrics = {name: binary_metrics(inputs.val_labels[name], probs[name]) for name in data.graph.names}
    run.write_json(VAL_METRICS, metrics)


# ---------------------------------------------------------------------------------------
# Results, and many runs
# ---------------------------------------------------------------------------------------


def _result(run: Run, seconds: float) -> FitResult:
    metrics = run.read_json(VAL_METRICS) if os.path.isfile(run.val_metrics_path) else {}
    best_epoch = run.read_json(BEST_STATE).get("epoch") if os.path.isfile(run.best_state_path) else None
    return FitResult(run.path, metrics, best_epoch, run.config().train.epochs, seconds)


def fit_or_resume(cfg: ExperimentConfig, manifest_path: str, run_dir: str,
                  split_file: str | None = None, verbose="auto") -> tuple[FitResult, str]:
    """Reuse a finished run, resume an interrupted (or failed) one, or start it; returns
    (result, what) with ``what`` one of ``reused``, ``resumed``, ``trained``. Drivers of many
    runs (``usmtl experiment``, ``usmtl tune``) use this so that nothing finished is lost. The
    run directory stays locked from the look at its status to the end of training."""
    from usmtl.training.loop import is_chief

    run = Run(run_dir)
    with run.lock() if is_chief() else contextlib.nullcontext():
        status = run.status
        if status == "finished":
            return _result(run, 0.0), "reused"
        if status in ("running", "failed"):
            return fit(None, None, run_dir, resume=True, verbose=verbose), "resumed"
        run.clear()  # died before its run file was written: nothing to keep
        return fit(cfg, manifest_path, run_dir, split_file=split_file, verbose=verbose), "trained"
