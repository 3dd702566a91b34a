"""The training driver behind ``usmtl fit``.

One order, as in TensorFlow Model Garden's ``train.py``: resolve the config, check the data,
make (or reuse) the patient split, save all of it in the run directory, set the precision
policy, choose the ``tf.distribute`` strategy, build and compile under its scope, train.

A run directory holds::

    config.yaml  split.csv  run.json  versions.json  history.csv  logs/ (TensorBoard)
    checkpoints/best.keras (the model kept: best validation AUC, or the last epoch with
    train.checkpoint: last)  checkpoints/last.keras
    val_predictions.csv  val_metrics.json

Example:
    >>> from usmtl.config import load_config
    >>> from usmtl.training.fit import fit
    >>> result = fit(load_config("configs/quickstart.yaml"), "demo/manifest.csv",
    ...              "runs/quickstart")  # doctest: +SKIP
    >>> result.val_metrics["malignancy"]["auc"]  # doctest: +SKIP
    0.97
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import sys
import time

import numpy as np

from usmtl.config import ExperimentConfig, load_config, save_config
from usmtl.data.manifest import Manifest, read_manifest
from usmtl.data.splits import (SPLIT_FILE, load_split, make_split, rows_in_split, save_split,
                               split_from_manifest)
from usmtl.errors import UsmtlError
from usmtl.evaluation.metrics import binary_metrics
from usmtl.evaluation.predictions import predictions_frame
from usmtl.tasks import Task, TaskGraph, label_table, task_labels

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
BEST_MODEL = os.path.join("checkpoints", "best.keras")
LAST_MODEL = os.path.join("checkpoints", "last.keras")
BEST_STATE = os.path.join("checkpoints", "best.json")


@dataclasses.dataclass
class FitResult:
    run_dir: str
    val_metrics: dict
    best_epoch: int | None
    epochs: int
    seconds: float


# ---------------------------------------------------------------------------------------
# Data and split, checked before anything is written
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class PreparedData:
    manifest: Manifest
    graph: TaskGraph
    labels: dict
    split: dict
    row_split: np.ndarray


def prepare_data(cfg: ExperimentConfig, manifest_path: str, split_file: str | None = None) -> PreparedData:
    """Read the manifest, derive task labels and the patient split; raise on any problem."""
    manifest = read_manifest(manifest_path)
    manifest.require_images()
    graph = TaskGraph.from_config(cfg.tasks)
    labels = label_table(manifest, graph)
    if split_file:
        split = load_split(split_file)
    else:
        split = split_from_manifest(manifest)
        if split is None:
            stratify = cfg.data.stratify or cfg.tasks[0].label
            strata = task_labels(manifest, Task("stratify", stratify))
            split = make_split(manifest.patient_ids(), strata, cfg.data.test_fraction,
                               cfg.data.val_fraction, cfg.data.split_seed)
    row_split = rows_in_split(manifest, split)
    train = row_split == "train"
    if not train.any():
        raise UsmtlError(f"{manifest_path}: the split leaves no training images. "
                         f"Received: {len(manifest)} images, split counts "
                         f"{dict(zip(*np.unique(row_split, return_counts=True)))}")
    for name, values in labels.items():
        if np.isnan(values[train]).all():
            raise UsmtlError(f"Task {name!r} has no known label among the training images; "
                             f"check its label source {graph.by_name[name].label!r}")
    return PreparedData(manifest, graph, labels, split, row_split)


# ---------------------------------------------------------------------------------------
# Precision, strategy, versions
# ---------------------------------------------------------------------------------------


def resolve_precision(precision: str) -> str:
    """``auto``: mixed_float16 where a GPU is visible, float32 on CPU."""
    if precision != "auto":
        return precision
    import tensorflow as tf

    return "mixed_float16" if tf.config.list_logical_devices("GPU") else "float32"


def resolve_strategy(name: str):
    """The ``tf.distribute`` strategy for ``train.strategy``.

    ``auto``: MultiWorkerMirroredStrategy when ``TF_CONFIG`` names a cluster of several
    tasks, MirroredStrategy across several local GPUs, else the default strategy.
    ``multiworker`` reads the cluster from ``TF_CONFIG`` (one worker without it). Call this
    before anything else touches TensorFlow's devices: a multi-worker strategy must be
    created before the runtime starts.
    """
    import tensorflow as tf

    from usmtl.training.loop import cluster_size

    if name == "multiworker" or (name == "auto" and cluster_size() > 1):
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        # Without GPUs, mirror over the logical CPUs a caller configured (tests do).
        return tf.distribute.MirroredStrategy(None if gpus or len(cpus) < 2 else cpus)
    return tf.distribute.get_strategy()


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


def _write_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, default=float)
    os.replace(tmp, path)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------------------------------
# Validation metrics and the best checkpoint
# ---------------------------------------------------------------------------------------


def _make_validation_callback(dataset, labels: dict, run_dir: str, predict, keep_best: bool = True):
    import keras

    class ValidationCheckpoint(keras.callbacks.Callback):
        """Per epoch: masked validation AUC and BCE per task into the logs (``val_auc`` is
        their mean), and, with ``keep_best``, ``best.keras`` saved when ``val_auc`` improves
        (``train.checkpoint: best``)."""

        def __init__(self):
            super().__init__()
            self.best = -math.inf
            state = os.path.join(run_dir, BEST_STATE)
            if os.path.isfile(state):  # resumed run: keep the best so far
                self.best = float(_read_json(state)["val_auc"])

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
                self.model.save(os.path.join(run_dir, BEST_MODEL))
                _write_json(os.path.join(run_dir, BEST_STATE), {"epoch": epoch + 1, "val_auc": score})

    return ValidationCheckpoint()


# ---------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------


def _start_run(cfg, manifest_path, out_dir, split_file):
    """Validate everything, then create the run directory. Returns (cfg, data)."""
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise UsmtlError(f"Run directory {out_dir} already exists and is not empty: pass "
                         f"--resume to continue it, or choose another --out")
    data = prepare_data(cfg, manifest_path, split_file)
    os.makedirs(os.path.join(out_dir, "checkpoints"), exist_ok=True)
    save_config(cfg, os.path.join(out_dir, CONFIG_FILE))
    save_split(data.split, os.path.join(out_dir, SPLIT_FILE))
    _write_json(os.path.join(out_dir, RUN_FILE), {
        "manifest": os.path.abspath(manifest_path), "status": "running",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "config_name": cfg.name})
    return cfg, data


def _resume_run(out_dir):
    run_file = os.path.join(out_dir, RUN_FILE)
    if not os.path.isfile(run_file):
        raise UsmtlError(f"--resume needs an existing run directory. Received: {out_dir} "
                         f"(no {RUN_FILE})")
    run = _read_json(run_file)
    cfg = load_config(os.path.join(out_dir, CONFIG_FILE))
    data = prepare_data(cfg, run["manifest"], os.path.join(out_dir, SPLIT_FILE))
    return cfg, data, run


def fit(cfg: ExperimentConfig | None, manifest_path: str | None, out_dir: str,
        split_file: str | None = None, resume: bool = False, verbose="auto",
        callbacks=()) -> FitResult:
    """Train a model and write a run directory; see the module docstring.

    With ``resume=True`` the run's own config, manifest and split are used, training goes
    on from the last finished epoch, and a finished run is returned as it is. Extra Keras
    ``callbacks`` run after the built-in ones.
    """
    extra_callbacks = list(callbacks)
    started = time.time()
    from usmtl.training.loop import is_chief

    chief = is_chief()
    if resume:
        cfg, data, run = _resume_run(out_dir)
        if run.get("status") == "finished":
            return _result(out_dir, time.time() - started)
        write_dir = out_dir if chief else _worker_dir(out_dir)
    else:
        if cfg is None or manifest_path is None:
            raise UsmtlError("fit needs a config and a manifest (or resume=True)")
        # Only the chief writes the run directory; other workers of a multi-worker run
        # write to a temporary one (the standard Keras multi-worker pattern).
        write_dir = out_dir if chief else _worker_dir(None)
        cfg, data = _start_run(cfg, manifest_path, write_dir, split_file)
    try:
        seconds = _train(cfg, data, write_dir, verbose, extra_callbacks, started)
        result = _result(write_dir, seconds)
    finally:
        if write_dir != out_dir:
            shutil.rmtree(write_dir, ignore_errors=True)
    return dataclasses.replace(result, run_dir=out_dir)


def _worker_dir(resume_from: str | None) -> str:
    """A non-chief worker's temporary run directory; on resume it starts from the chief's
    backup (which then needs a file system shared by the workers)."""
    import tempfile

    path = tempfile.mkdtemp(prefix="usmtl-worker-")
    if resume_from is not None:
        for name in (CONFIG_FILE, SPLIT_FILE, RUN_FILE, BEST_STATE):
            source = os.path.join(resume_from, name)
            if os.path.isfile(source):
                os.makedirs(os.path.dirname(os.path.join(path, name)), exist_ok=True)
                shutil.copy(source, os.path.join(path, name))
        if os.path.isdir(os.path.join(resume_from, "backup")):
            shutil.copytree(os.path.join(resume_from, "backup"), os.path.join(path, "backup"))
    return path


def _train(cfg, data, out_dir, verbose, extra_callbacks, started) -> float:
    """Build, train and evaluate into ``out_dir``; returns the run's seconds."""
    strategy = resolve_strategy(cfg.train.strategy)  # first: before TF starts its runtime

    import keras

    from usmtl.data.pipeline import make_dataset
    from usmtl.model.multitask import build_model
    from usmtl.training.compile import compile_for_training
    from usmtl.training.loop import (predict_function, resolve_jit,
                                     resolve_steps_per_execution, strategy_name, train)

    _write_json(os.path.join(out_dir, "versions.json"), library_versions())
    keras.utils.set_random_seed(cfg.train.seed)
    precision = resolve_precision(cfg.train.precision)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision)

    manifest, rows = data.manifest, data.row_split
    paths, boxes = np.array(manifest.image_paths()), manifest.boxes()
    def subset(name):
        idx = np.flatnonzero(rows == name)
        return idx, paths[idx], [boxes[i] for i in idx], {t: v[idx] for t, v in data.labels.items()}

    train_idx, train_paths, train_boxes, train_labels = subset("train")
    val_idx, val_paths, val_boxes, val_labels = subset("val")
    batch = cfg.train.batch_size
    cache_dir = os.path.join(out_dir, "cache")
    train_ds = make_dataset(train_paths, train_boxes, train_labels, cfg.data, batch, training=True,
                            seed=cfg.train.seed, balance=cfg.train.balance_classes,
                            cache_dir=cache_dir, name="train")
    steps = max(1, len(train_idx) // batch)
    jit = resolve_jit(cfg.train.jit_compile, strategy)
    steps_per_execution = resolve_steps_per_execution(cfg.train.steps_per_execution, steps)
    try:
        with strategy.scope():
            # The saved compile config keeps "auto": a model trained with XLA on a GPU does
            # not force XLA on the CPU that loads it. The loop below gets the resolved value.
            model = compile_for_training(build_model(cfg), cfg, steps, "auto", steps_per_execution)
        predict = predict_function(model)
        callbacks = [keras.callbacks.BackupAndRestore(os.path.join(out_dir, "backup"))]
        val_ds = make_dataset(val_paths, val_boxes, None, cfg.data, batch, training=False,
                              cache_dir=cache_dir, name="val")
        if len(val_idx):
            callbacks.append(_make_validation_callback(val_ds, val_labels, out_dir, predict,
                                                       keep_best=cfg.train.checkpoint == "best"))
            if cfg.train.early_stopping > 0:
                callbacks.append(keras.callbacks.EarlyStopping(
                    monitor="val_auc", mode="max", patience=cfg.train.early_stopping))
        callbacks += [
            keras.callbacks.CSVLogger(os.path.join(out_dir, "history.csv"), append=True),
            keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), write_graph=False,
                                        profile_batch=0),
        ] + extra_callbacks
        if verbose == "auto":
            verbose = 1 if sys.stdout.isatty() else 2
        train(model, train_ds, strategy, epochs=cfg.train.epochs, steps_per_epoch=steps,
              callbacks=callbacks, verbose=verbose, steps_per_execution=steps_per_execution,
              jit_compile=jit)
        model.save(os.path.join(out_dir, LAST_MODEL))
        if cfg.train.checkpoint == "last" or not os.path.isfile(os.path.join(out_dir, BEST_MODEL)):
            # train.checkpoint: last, or no validation set, or no AUC ever defined: the model
            # kept is the last epoch's.
            model.save(os.path.join(out_dir, BEST_MODEL))
            _write_json(os.path.join(out_dir, BEST_STATE), {"epoch": cfg.train.epochs, "val_auc": None,
                                                            "checkpoint": "last"})
        if len(val_idx):
            best = keras.models.load_model(os.path.join(out_dir, BEST_MODEL))
            probs = predict_function(best)(val_ds)
            frame = predictions_frame(manifest.frame["image"].to_numpy()[val_idx],
                                      manifest.patient_ids()[val_idx], ["val"] * len(val_idx),
                                      probs, val_labels, data.graph.edges)
            frame.to_csv(os.path.join(out_dir, "val_predictions.csv"), index=False)
            metrics = {name: binary_metrics(val_labels[name], probs[name]) for name in data.graph.names}
            _write_json(os.path.join(out_dir, "val_metrics.json"), metrics)
        # A file cache (data.cache disk, or auto on a large data set) is only needed to
        # resume; a finished run does not keep gigabytes of crops.
        shutil.rmtree(cache_dir, ignore_errors=True)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    run_file = os.path.join(out_dir, RUN_FILE)
    run = _read_json(run_file)
    seconds = time.time() - started
    run.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S"),
               precision=precision, strategy=strategy_name(strategy),
               replicas=int(strategy.num_replicas_in_sync), jit_compile=bool(jit),
               steps_per_execution=int(steps_per_execution),
               train_images=int(len(train_idx)), val_images=int(len(val_idx)),
               seconds=round(seconds, 1))
    _write_json(run_file, run)
    return seconds


def _result(out_dir: str, seconds: float) -> FitResult:
    metrics_path = os.path.join(out_dir, "val_metrics.json")
    metrics = _read_json(metrics_path) if os.path.isfile(metrics_path) else {}
    state_path = os.path.join(out_dir, BEST_STATE)
    best_epoch = _read_json(state_path).get("epoch") if os.path.isfile(state_path) else None
    cfg = load_config(os.path.join(out_dir, CONFIG_FILE))
    return FitResult(out_dir, metrics, best_epoch, cfg.train.epochs, seconds)


def run_status(run_dir: str) -> str | None:
    """``finished``, ``running`` (interrupted or in progress), or None (no run there)."""
    path = os.path.join(run_dir, RUN_FILE)
    if not os.path.isfile(path):
        return None
    return _read_json(path).get("status")


def fit_or_resume(cfg: ExperimentConfig, manifest_path: str, run_dir: str,
                  split_file: str | None = None, verbose="auto") -> tuple[FitResult, str]:
    """Reuse a finished run, resume an interrupted one, or start it; returns (result, what)
    with ``what`` one of ``reused``, ``resumed``, ``trained``. Drivers of many runs
    (``usmtl experiment``, ``usmtl tune``) use this so that nothing finished is lost."""
    import shutil

    status = run_status(run_dir)
    if status == "finished":
        return _result(run_dir, 0.0), "reused"
    if status == "running":
        return fit(None, None, run_dir, resume=True, verbose=verbose), "resumed"
    if os.path.isdir(run_dir):  # died before its run file was written: nothing to keep
        shutil.rmtree(run_dir)
    return fit(cfg, manifest_path, run_dir, split_file=split_file, verbose=verbose), "trained"
