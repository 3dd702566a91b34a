"""Training a run, in phases (for :func:`usmtl.training.fit.fit`, which resolves, checks,
locks and marks the run around it): build inputs, build model, build callbacks, train, write
outputs. Each phase calls the engine of the Keras backend in use
(:mod:`usmtl.training.engine`), so the run directory is the same on either.

The callbacks, in order: the guard against non-finite losses
(:func:`usmtl.training.failsafe.finite_guard`), the per-epoch seeds, validation with the best
checkpoint (masked AUC per task, ``val_auc`` their mean over the scored tasks), early
stopping, the CSV history, TensorBoard (TensorFlow only), the backup to resume from, then the
caller's. A task with one class among its validation labels has no AUC and is left out of
``val_auc``, with a warning.

Example:
    >>> from usmtl.training.phases import train_run
    >>> seconds = train_run(cfg, data, run, "auto", [], time.time())  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import shutil
import sys
import time

import numpy as np

from usmtl.console import warn_once
from usmtl.errors import UsmtlError
from usmtl.evaluation.metrics import binary_metrics
from usmtl.evaluation.predictions import predictions_frame
from usmtl.run import (BEST_STATE, VAL_METRICS, VERSIONS_FILE, Run, write_csv_atomic,
                       write_text_atomic)


def _warn(text: str, key=None) -> None:
    """Said once per command (``key``, default the text; see usmtl.console.warn_once)."""
    warn_once(key or text, text)


def library_versions(engine=None) -> dict:
    """Versions of what trained the run; the backend's library is asked, never imported."""
    from importlib import metadata

    import keras

    from usmtl._version import __version__
    from usmtl.training.engine import training_engine

    engine = engine or training_engine()

    def installed(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "usmtl": __version__, "python": sys.version.split()[0],
        "tensorflow": installed("tensorflow"), "jax": installed("jax"),
        "keras": keras.__version__, "numpy": np.__version__,
        "keras_backend": keras.backend.backend(), "platform": platform.platform(),
        "devices": engine.devices(),
    }


def _make_validation_callback(dataset, labels: dict, run: Run, predict, keep_best: bool = True,
                              scored=None, explain=None):
    import keras

    from usmtl.training.failsafe import NonFiniteError, save_model_file

    scored = list(labels) if scored is None else list(scored)

    class ValidationCheckpoint(keras.callbacks.Callback):
        """Per epoch: masked validation AUC and BCE per task into the logs (``val_auc`` is
        the mean over the ``scored`` tasks), and, with ``keep_best``, ``best.keras`` saved
        when ``val_auc`` improves (``train.checkpoint: best``)."""

        def __init__(self):
            super().__init__()
            self.best = -math.inf
            if os.path.isfile(run.best_state_path):  # resumed run: keep the best so far
                self.best = float(run.read_json(BEST_STATE)["val_auc"])

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            probs = predict(dataset)
            # Weights can be huge yet finite (a far too high learning rate) while the
            # predictions overflow: stop here, before the epoch is saved or backed up.
            bad = [name for name in labels if not np.isfinite(np.asarray(probs[name])).all()]
            if bad and explain is not None:
                raise NonFiniteError(explain(epoch, None, f"the validation predictions of "
                                                          f"{', '.join(bad)} are not finite"))
            aucs = []
            for name, y in labels.items():
                p = np.clip(np.ravel(probs[name]).astype(float), 1e-7, 1 - 1e-7)
                known = ~np.isnan(y)
                auc = binary_metrics(y, p)["auc"]
                if name in scored:
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
                save_model_file(self.model, run.best_model)
                run.write_json(BEST_STATE, {"epoch": epoch + 1, "val_auc": score,
                                            "scored": scored})

    return ValidationCheckpoint()


@dataclasses.dataclass
class _Inputs:
    train_ds: object      # tf.data: shuffled, full batches of (image, y, sample_weight)
    val_ds: object        # tf.data: the validation images, in order
    train_images: int
    val_idx: np.ndarray   # manifest rows of the validation images
    val_labels: dict      # {task: labels of the validation images}
    steps: int            # training steps per epoch
    unscored: dict = dataclasses.field(default_factory=dict)  # {child task: why}: one class


def train_run(cfg, data, run: Run, verbose, extra_callbacks, started, stop=None) -> float:
    """Build, train and evaluate into ``run`` (a run directory already created and locked
    by :func:`usmtl.training.fit.fit`); returns the run's seconds.

    Args:
        cfg: the run's config.
        data: its :class:`~usmtl.data.prepare.PreparedData`.
        run: the run directory written.
        verbose: Keras' progress output (``auto``, ``line``, 0, 1, 2).
        extra_callbacks: the caller's Keras callbacks, run after the built-in ones.
        started: ``time.time()`` when the fit began.
        stop: the :class:`~usmtl.training.failsafe.StopSignals` that may ask training to stop.

    Returns:
        Seconds since ``started``, once the run is marked finished.

    Raises:
        UsmtlError: an image that cannot be read, a full disk
            (:class:`~usmtl.training.failsafe.DiskFullError`), a non-finite loss
            (:class:`~usmtl.training.failsafe.NonFiniteError`).
        StopRequested: a stop signal ended training (the run stays resumable).
    """
    from usmtl.training.engine import training_engine
    from usmtl.training.failsafe import StopRequested

    engine = training_engine()  # usmtl.training.loop (TensorFlow) or .jax_loop
    strategy = engine.resolve_strategy(cfg.train.strategy)  # first: before TF starts its runtime

    from usmtl.data.crops import decode_failure
    from usmtl.model.precision import precision_policy

    decode_failure()  # forget the failures of earlier datasets of this process
    run.write_json(VERSIONS_FILE, library_versions(engine))
    os.makedirs(run.checkpoints_dir, exist_ok=True)
    _trim_history(run)
    engine.set_seed(cfg.train.seed)
    precision = engine.resolve_precision(cfg.train.precision)
    with precision_policy(precision):
        try:
            inputs = _build_inputs(cfg, data, run, engine)
            model, jit, steps_per_execution = _build_model(cfg, strategy, inputs.steps, engine)
            callbacks = _build_callbacks(cfg, run, inputs, model, extra_callbacks, precision, engine)
            if verbose == "auto":  # a bar on a terminal, one short line per epoch else
                verbose = 1 if sys.stdout.isatty() else "line"
            if verbose == "line":
                from usmtl.training.epoch_line import EpochLine

                callbacks, verbose = callbacks + [EpochLine(cfg.train.epochs, data.graph.names)], 0
            engine.train(model, inputs.train_ds, strategy, epochs=cfg.train.epochs,
                         steps_per_epoch=inputs.steps, callbacks=callbacks, verbose=verbose,
                         steps_per_execution=steps_per_execution, jit_compile=jit, stop=stop)
            _write_outputs(cfg, data, run, model, inputs, engine)
        except (UsmtlError, StopRequested, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            error = _training_error(exc, data, run)
            if error is None:
                raise
            raise error from exc
    seconds = time.time() - started
    run.mark_finished(backend=engine.NAME, precision=precision,
                      strategy=engine.strategy_name(strategy),
                      replicas=int(strategy.num_replicas_in_sync), jit_compile=bool(jit),
                      steps_per_execution=int(steps_per_execution),
                      train_images=inputs.train_images, val_images=int(len(inputs.val_idx)),
                      seconds=round(seconds, 1))
    # Only needed to resume: removed once the run is finished (as BackupAndRestore did).
    shutil.rmtree(run.backup_dir, ignore_errors=True)
    return seconds


def _training_error(exc: Exception, data, run: Run) -> UsmtlError | None:
    """The :class:`UsmtlError` that an exception of training stands for: an image that
    could not be read inside ``tf.data``, or a full disk; None for any other."""
    import errno

    from usmtl.data.crops import decode_failure
    from usmtl.training.failsafe import DiskFullError, free_bytes, human_bytes

    failure = decode_failure(exc)
    if failure is not None:
        return UsmtlError(f"Training stopped: an image could not be read: {failure}. The check "
                          f"before training read it: did the file change since? Fix or remove "
                          f"that row ('usmtl check {data.manifest.path}' reports every problem)")
    text = str(exc)
    if (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) \
            or "No space left on device" in text:
        filename = getattr(exc, "filename", None)
        where = filename or f"the run directory {run.path}"
        free = free_bytes(os.path.dirname(os.path.abspath(filename)) if filename else run.path)
        return DiskFullError(f"Training stopped: no space left on the device writing {where} "
                             f"({'unknown' if free is None else human_bytes(free)} free): "
                             f"{text.splitlines()[0] if text else type(exc).__name__}")
    return None


def _trim_history(run: Run) -> None:
    """Keep the rows of ``history.csv`` that the backup covers: the epochs after it are
    trained again on resume (and would be logged twice)."""
    from usmtl.training.failsafe import find_backup

    if not os.path.isfile(run.history_path):
        return
    found = find_backup(run.backup_dir, note=lambda text: None)
    done = found[0] if found else 0
    with open(run.history_path, newline="") as f:
        lines = f.readlines()
    if not lines:
        return
    header, rows = lines[0], lines[1:]
    kept = [row for row in rows if row.strip() and _epoch_of(row) is not None and _epoch_of(row) < done]
    if len(kept) != len([r for r in rows if r.strip()]):
        write_text_atomic(run.history_path, "".join([header] + kept))


def _epoch_of(row: str) -> int | None:
    try:
        return int(float(row.split(",", 1)[0]))
    except ValueError:
        return None


def _build_inputs(cfg, data, run: Run, engine) -> _Inputs:
    """The training and validation data of the split, as the engine feeds them (a file
    cache, when ``data.cache`` asks for one, in ``run/cache``)."""
    from usmtl.data.crops import Crops

    manifest, rows = data.manifest, data.row_split
    train_idx, val_idx = np.flatnonzero(rows == "train"), np.flatnonzero(rows == "val")
    train_labels = {t: v[train_idx] for t, v in data.labels.items()}
    val_labels = {t: v[val_idx] for t, v in data.labels.items()}
    batch = cfg.train.batch_size
    train_ds = engine.make_train_data(Crops.from_manifest(manifest, train_idx, cfg.data),
                                      train_labels, cfg.data, batch, seed=cfg.train.seed,
                                      balance=cfg.train.balance_classes,
                                      cache_dir=run.cache_dir, name="train")
    val_ds = engine.make_eval_data(Crops.from_manifest(manifest, val_idx, cfg.data), cfg.data,
                                   batch, cache_dir=run.cache_dir, name="val")
    return _Inputs(train_ds, val_ds, int(len(train_idx)), val_idx, val_labels,
                   max(1, len(train_idx) // batch),
                   {t: why for t, why in (getattr(data, "one_class", {}) or {}).items()
                    if data.graph.by_name[t].parent is not None})


def _build_model(cfg, strategy, steps: int, engine):
    """``(model, jit, steps_per_execution)``: built and compiled under the strategy."""
    from usmtl.model.multitask import build_model
    from usmtl.training.compile import compile_for_training

    jit = engine.resolve_jit(cfg.train.jit_compile, strategy)
    steps_per_execution = engine.resolve_steps_per_execution(cfg.train.steps_per_execution, steps)
    with strategy.scope():
        # The saved compile config keeps "auto": a model trained with XLA on a GPU does
        # not force XLA on the CPU that loads it. The loop gets the resolved value.
        model = compile_for_training(build_model(cfg), cfg, steps, "auto", steps_per_execution)
    return model, jit, steps_per_execution


def _build_callbacks(cfg, run: Run, inputs: _Inputs, model, extra_callbacks,
                     precision: str, engine) -> list:
    """In this order: the guard against non-finite losses (first: no later callback sees a
    bad epoch), the per-epoch seeds (:mod:`usmtl.training.resume_state`), validation and best checkpoint, early stopping, CSV history, TensorBoard
    (TensorFlow only: its writer is TensorFlow's), the backup (to resume; after the
    history, so that a row is never missing for an epoch the backup holds), then the
    caller's callbacks."""
    import keras

    from usmtl.training.failsafe import crash_safe_backup, finite_guard
    from usmtl.training.resume_state import epoch_seeds, resumable_early_stopping

    explain = _non_finite_explainer(cfg, run, precision)
    callbacks = [finite_guard(explain), epoch_seeds(cfg.train.seed)]
    if len(inputs.val_idx):
        scored = _scored_tasks(inputs)
        keep_best = cfg.train.checkpoint == "best"
        if keep_best and not scored:
            _warn("no task has both classes among its known validation labels, so no epoch "
                  "has a validation AUC: the model kept (best.keras) is the last epoch's")
        callbacks.append(_make_validation_callback(inputs.val_ds, inputs.val_labels, run,
                                                   engine.predict_function(model),
                                                   keep_best=keep_best, scored=scored,
                                                   explain=explain))
        if cfg.train.early_stopping > 0:
            callbacks.append(resumable_early_stopping(run.history_path, cfg.train.early_stopping))
    elif cfg.train.checkpoint == "best":
        _warn(f"no validation images ({inputs.train_images} training images; the split gives "
              f"no patient to val), so train.checkpoint=best cannot choose an epoch: the model "
              f"kept (best.keras) is the last epoch's, and best.json says so")
    callbacks.append(keras.callbacks.CSVLogger(run.history_path, append=True))
    if engine.NAME == "tensorflow":
        callbacks.append(keras.callbacks.TensorBoard(run.logs_dir, write_graph=False,
                                                     profile_batch=0))
    return callbacks + [crash_safe_backup(run.backup_dir)] + list(extra_callbacks)


def _scored_tasks(inputs: _Inputs) -> list[str]:
    """The tasks whose validation AUC enters ``val_auc`` (the best-checkpoint score): not
    child tasks with one class among their training labels (``PreparedData.one_class``),
    nor those with one class among their validation labels (no AUC); a warning for each."""
    scored = []
    for name, y in inputs.val_labels.items():
        if name in inputs.unscored:
            continue
        classes = np.unique(y[~np.isnan(y)])
        if len(classes) < 2:
            what = "no known label" if len(classes) == 0 else \
                f"only label {int(classes[0])} ({int(np.sum(~np.isnan(y)))} images)"
            _warn(f"task {name!r} has {what} among the validation images: its AUC is undefined "
                  f"and left out of the best-checkpoint score (val_auc)",
                  key=("no validation AUC", name))
            continue
        scored.append(name)
    return scored


def _non_finite_explainer(cfg, run: Run, precision: str):
    """The message of a non-finite loss (see :func:`usmtl.training.failsafe.finite_guard`):
    where, what, the likely cause, and what was kept."""
    def explain(epoch, batch, what):
        where = f"epoch {epoch + 1}" + (f", batch {batch + 1}" if batch is not None else "'s end")
        lr = float(cfg.train.learning_rate)
        if lr >= 0.1:
            causes = [f"the learning rate train.learning_rate={lr:g} is far too high (1e-4 to "
                      f"1e-2 is usual): lower it"]
        else:
            causes = [f"a learning rate too high for this model and data "
                      f"(train.learning_rate={lr:g}): try a tenth of it"]
        if "16" in precision:
            causes.append(f"an overflow in {precision}: try --set train.precision=float32")
        causes.append("labels or images (run 'usmtl check' on the manifest)")
        return (f"Training stopped at {where}: {what}. Likely cause: "
                + "; or ".join(causes) + f". Nothing of epoch {epoch + 1} was saved; "
                + _kept_text(run))
    return explain


def _kept_text(run: Run) -> str:
    """What a failed run keeps, and what to do next."""
    from usmtl.training.failsafe import find_backup

    kept = []
    if os.path.isfile(run.best_model):
        state = run.read_json(BEST_STATE) if os.path.isfile(run.best_state_path) else {}
        kept.append(f"the last good checkpoint is {run.best_model} (epoch {state.get('epoch', '?')})")
    found = find_backup(run.backup_dir, note=lambda text: None)
    if found:
        kept.append(f"the backup of epoch {found[0]} is intact")
    if not kept:
        return ("no epoch had finished, so nothing was kept: run the same command again with "
                "the cause fixed (it clears the failed run and starts it again).")
    return "; ".join(kept) + ". Train again into a new --out with the cause fixed."


def _write_outputs(cfg, data, run: Run, model, inputs: _Inputs, engine) -> None:
    """The last and the kept checkpoint, validation predictions and metrics; the file cache
    goes (a finished run does not keep gigabytes of crops)."""
    from usmtl.training.failsafe import save_model_file

    save_model_file(model, run.last_model)
    if cfg.train.checkpoint == "last" or not os.path.isfile(run.best_model):
        # train.checkpoint: last, or no validation set, or no AUC ever defined: the model
        # kept is the last epoch's.
        save_model_file(model, run.best_model)
        why = {} if cfg.train.checkpoint == "last" else {"requested": "best", "why": "no validation images"
                                                         if not len(inputs.val_idx) else "no validation AUC"}
        run.write_json(BEST_STATE, {"epoch": cfg.train.epochs, "val_auc": None, "checkpoint": "last", **why})
    _precise_bn(cfg, data, run)
    if len(inputs.val_idx):
        _write_validation(data, run, inputs, engine)
    # A file cache (data.cache disk, or auto on a large data set) is only needed to resume.
    shutil.rmtree(run.cache_dir, ignore_errors=True)


def _precise_bn(cfg, data, run: Run) -> None:
    """``train.precise_bn``: the kept model's BatchNorm statistics re-estimated on the
    training crops (:mod:`usmtl.training.precise_bn`), recorded in ``best.json``."""
    from usmtl.config import precise_bn_on

    state = run.read_json(BEST_STATE) if os.path.isfile(run.best_state_path) else {}
    if not precise_bn_on(cfg) or "precise_bn_layers" in state:  # a resumed finish: done once
        return
    from usmtl.data.crops import Crops
    from usmtl.training.failsafe import save_model_file
    from usmtl.training.precise_bn import precise_bn

    model = run.open_model("best")
    train_idx = np.flatnonzero(data.row_split == "train")
    layers = precise_bn(model, Crops.from_manifest(data.manifest, train_idx, cfg.data)
                        .batches(cfg.train.batch_size))
    save_model_file(model, run.best_model)
    run.write_json(BEST_STATE, {**state, "precise_bn_layers": layers})


def _write_validation(data, run: Run, inputs: _Inputs, engine) -> None:
    """``val_predictions.csv`` and ``val_metrics.json`` of the kept checkpoint."""
    probs = engine.predict_function(run.open_model("best"))(inputs.val_ds)
    idx, manifest = inputs.val_idx, data.manifest
    frame = predictions_frame(manifest.frame["image"].to_numpy()[idx], manifest.patient_ids()[idx],
                              ["val"] * len(idx), probs, inputs.val_labels, data.graph.edges)
    write_csv_atomic(run.val_predictions_path, frame)
    run.write_predictions_stamp("val")
    metrics = {name: binary_metrics(inputs.val_labels[name], probs[name]) for name in data.graph.names}
    run.write_json(VAL_METRICS, metrics)
