"""The training driver behind ``usmtl fit``.

One order, as in TensorFlow Model Garden's ``train.py``: resolve the config, check the data,
make (or reuse) the patient split, save all of it in the run directory, set the precision
policy, choose the ``tf.distribute`` strategy, build and compile under its scope, train.
Training itself runs in named phases (:mod:`usmtl.training.phases`): build inputs, build
model, build callbacks, train, write outputs. Each phase calls the engine of the Keras
backend in use (:mod:`usmtl.training.engine`: ``tf.data`` and ``tf.distribute`` on
TensorFlow, NumPy batches and Keras' ``fit`` on JAX), so the run directory is the same on
either.

The run directory (:class:`usmtl.run.Run`) holds::

    config.yaml  split.csv  run.json  versions.json  history.csv  logs/ (TensorBoard)
    checkpoints/best.keras (the model kept: best validation AUC, or the last epoch with
    train.checkpoint: last)  checkpoints/last.keras
    val_predictions.csv  val_metrics.json

and is locked while it trains (:meth:`usmtl.run.Run.lock`): a second ``fit`` or
``--resume`` of it is refused at once, naming the process that holds it.

Failing safe (each case ends with a message that says what to do):

- The data are checked before anything is written (:func:`usmtl.data.prepare.prepare_data`:
  ``usmtl check``'s checks plus every image decoded once).
- One class among a task's known training labels: a *root* task is refused before training
  (nothing to learn, and no AUC to pick the best checkpoint by); a *child* task is trained
  (its hinge still ties it to its parent) but left out of the best-checkpoint score
  (``val_auc``), with a warning. A task with one class among its validation labels is left
  out of that score too (its AUC is undefined), with a warning.
- An error of usmtl during training (an image that cannot be read after all, a full disk,
  a non-finite loss) marks the run ``failed`` with its reason and is raised as a
  :class:`~usmtl.errors.UsmtlError` (the CLI exits 2).
- A non-finite loss or weight stops training at once (:func:`usmtl.training.failsafe.finite_guard`):
  nothing of that epoch is saved, ``best.keras`` and the backup stay those of the last good
  epochs, and the message names the epoch and the likely cause.
- Checkpoints and the backup are written whole or not at all; a full disk names the path
  and the space needed, and ``--resume`` continues from the last complete backup once
  space is freed (:func:`usmtl.training.failsafe.crash_safe_backup`).
- SIGINT or SIGTERM stops after the current step: the run stays ``running`` with its last
  complete backup, the command that resumes it is printed, and :class:`TrainingInterrupted`
  (a ``SystemExit`` of status 130 or 143) ends the process.
- Re-running a failed run: a plain ``fit`` (without ``--resume``) into a run directory whose
  status is ``failed`` and that holds no trained epoch (no row in ``history.csv``, nothing in
  ``checkpoints/`` or ``backup/``) clears it and starts again, with a note; any other
  directory that is not empty is refused (``--resume`` continues it).

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
import os
import shlex
import shutil
import sys
import time

from usmtl.config import ExperimentConfig
from usmtl.console import warn_once
from usmtl.data.prepare import prepare_data
from usmtl.errors import UsmtlError
from usmtl.run import BEST_STATE, CONFIG_FILE, RUN_FILE, SPLIT_FILE, VAL_METRICS, Run
from usmtl.training import phases


class TrainingInterrupted(SystemExit):
    """``fit`` stopped on SIGINT or SIGTERM and left its run resumable (status ``running``,
    last complete backup intact). A ``SystemExit`` whose ``code`` is 128 + the signal's
    number (130 for SIGINT, 143 for SIGTERM, the status of a process the signal ended), so
    that the CLI exits with it; ``str()`` is the message, which ``fit`` has printed."""

    def __init__(self, signum: int, run_dir: str, message: str):
        super().__init__(128 + int(signum))
        self.signum, self.run_dir, self.message = int(signum), run_dir, message

    def __str__(self) -> str:
        return self.message


def resume_command(run_dir: str) -> str:
    """The command that continues the run in ``run_dir``."""
    return f"usmtl fit --resume --out {shlex.quote(str(run_dir))}"


def _note(text: str) -> None:
    print(f"Note: {text}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class FitResult:
    run_dir: str
    val_metrics: dict
    best_epoch: int | None
    epochs: int
    seconds: float


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
    first file is written (or, resuming, before it is read) to the end of training. A fresh
    fit into a ``failed`` run that holds no trained epoch clears it first (module docstring).

    Args:
        cfg: the config (None with ``resume``).
        manifest_path: the manifest CSV (None with ``resume``).
        out_dir: the run directory to create (or to resume).
        split_file: reuse this split (a ``split.csv`` or a run directory).
        resume: continue the run in ``out_dir``.
        verbose: Keras' progress output (``auto``: a bar on a terminal, a line per epoch else).
        callbacks: extra Keras callbacks.

    Returns:
        A :class:`FitResult`: ``run_dir``, the kept model's ``val_metrics`` per task,
        ``best_epoch``, ``epochs``, ``seconds``.

    Raises:
        UsmtlError: a bad config, manifest or split (nothing is written then), a directory
            that is not empty (fresh) or not a run (resume), or one that another process is
            training. An error of usmtl during training (an unreadable image, a full disk,
            a non-finite loss) marks the run ``failed`` with its reason.
        TrainingInterrupted: SIGINT or SIGTERM stopped training; the run is resumable.

    Example:
        >>> from usmtl.config import load_config
        >>> from usmtl.training.fit import fit
        >>> result = fit(load_config("paper", ["train.epochs=50"]), "data/manifest.csv",
        ...              "runs/paper-hl")  # doctest: +SKIP
        >>> result.val_metrics["alnm"]["auc"]  # doctest: +SKIP
    """
    extra_callbacks = list(callbacks)
    started = time.time()
    from usmtl.training.failsafe import StopRequested, StopSignals
    from usmtl.training.loop import is_chief

    chief = is_chief()
    run = Run.open(out_dir) if resume else _new_run(cfg, manifest_path, out_dir, chief)
    data = None if resume else _prepare(cfg, manifest_path, split_file)  # before any write
    # Only the chief writes (and locks) the run directory; other workers of a multi-worker
    # run write to a temporary one (the standard Keras multi-worker pattern).
    with run.lock() if chief else contextlib.nullcontext():
        if resume and run.status == "finished":
            return _result(run, time.time() - started)
        if resume:
            cfg, data = _resume_run(run, chief)
        elif chief and run.contents():
            _restart_failed(run)
        write_run = run if chief else Run(_worker_dir(out_dir if resume else None))
        # From here on SIGINT and SIGTERM stop training cleanly (module docstring).
        try:
            with StopSignals() as stop:
                try:
                    if not resume:
                        Run.create(write_run.path, cfg, manifest_path, data.split)
                    try:
                        seconds = phases.train_run(cfg, data, write_run, verbose, extra_callbacks,
                                                   started, stop)
                    except UsmtlError as exc:
                        _mark_failed(write_run, exc)
                        raise _with_next_step(exc, write_run, out_dir) from exc
                except StopRequested as exc:
                    raise _interrupted(exc, write_run, out_dir, cfg) from None
            result = _result(write_run, seconds)
        finally:
            if write_run is not run:
                shutil.rmtree(write_run.path, ignore_errors=True)
    return dataclasses.replace(result, run_dir=out_dir)


def _prepare(cfg, manifest_path, split_file):
    """:func:`~usmtl.data.prepare.prepare_data`, refusing a root task with one class among
    its training labels and warning about a child task (module docstring)."""
    data = prepare_data(cfg, manifest_path, split_file)
    for name, why in data.one_class.items():
        task = data.graph.by_name[name]
        if task.parent is None:
            raise UsmtlError(f"Task {name!r} cannot be trained: {why}; a task needs both classes "
                             f"among its training images (its AUC, which picks the best "
                             f"checkpoint, is undefined otherwise). Check the {task.label!r} "
                             f"labels of {manifest_path}, or choose another split "
                             f"(--set data.split_seed=..., --split-file)")
        warn_once(("one training class", name), f"task {name!r}: {why}; it is trained but left "
                                                f"out of the best-checkpoint score (val_auc)")
    return data


def _new_run(cfg, manifest_path, out_dir, chief) -> Run:
    """The run directory of a fresh fit, refused at once when it is not empty (unless it
    is a failed run that may start again, see :func:`restartable`)."""
    if cfg is None or manifest_path is None:
        raise UsmtlError("fit needs a config and a manifest (or resume=True)")
    run = Run(out_dir)
    if chief and not restartable(run):
        run.require_empty()
    return run


def trained_epochs(run: Run) -> bool:
    """Whether the run holds anything of a finished epoch: a row of ``history.csv``, a file
    in ``checkpoints/`` or in ``backup/``."""
    for folder in (run.checkpoints_dir, run.backup_dir):
        if os.path.isdir(folder) and os.listdir(folder):
            return True
    if os.path.isfile(run.history_path):
        with open(run.history_path, errors="replace") as f:
            return sum(1 for line in f if line.strip()) > 1
    return False


def restartable(run: Run) -> bool:
    """Whether a fresh fit may clear ``run`` and start again: its status is ``failed``, it
    holds no trained epoch (:func:`trained_epochs`) and no process holds it."""
    try:
        if run.status != "failed":
            return False
    except UsmtlError:  # an unreadable run.json: not a run to clear
        return False
    return not trained_epochs(run) and run.holder_in_use() is None


def _restart_failed(run: Run) -> None:
    """Clear a failed run that holds no trained epoch (checked again under the lock)."""
    if not restartable(run):
        run.require_empty()
        return
    error = (run.info().get("error") or "no reason recorded").splitlines()[0]
    error = error if len(error) <= 160 else error[:157] + "..."
    _note(f"{run.path}: its previous fit failed before finishing an epoch ({error}); "
          f"clearing it and starting again")
    run.clear()


def _mark_failed(run: Run, exc: BaseException) -> None:
    """``run.mark_failed(exc)``; when even that cannot be written (a full disk), a note."""
    try:
        run.mark_failed(exc)
    except UsmtlError as again:
        _note(f"could not mark {run.path} failed: {again}")


def _with_next_step(exc: UsmtlError, run: Run, out_dir: str) -> UsmtlError:
    """``exc`` with the command that continues or restarts the run appended."""
    from usmtl.training.failsafe import NonFiniteError

    if isinstance(exc, NonFiniteError):
        return exc  # its message says what to change; resuming would fail the same way
    if trained_epochs(run):
        step = (f"The run is kept (status failed): once the cause is fixed, resume it with: "
                f"{resume_command(out_dir)}")
    else:
        step = ("No epoch had finished: once the cause is fixed, run the same 'usmtl fit' "
                "command again; it clears the failed run and starts it again.")
    return type(exc)(f"{exc}\n{step}") if type(exc).__init__ is UsmtlError.__init__ \
        else UsmtlError(f"{exc}\n{step}")


def _interrupted(stop, run: Run, out_dir: str, cfg) -> "TrainingInterrupted":
    """The :class:`TrainingInterrupted` of a :class:`~usmtl.training.failsafe.StopRequested`,
    its message printed."""
    from usmtl.training.failsafe import find_backup, signal_name

    found = find_backup(run.backup_dir, note=lambda text: None)
    epochs = cfg.train.epochs if cfg is not None else "?"
    if stop.epoch is None:
        when = "at once"
    elif stop.finished:
        when = f"after epoch {stop.epoch + 1}/{epochs}"
    else:
        when = f"during epoch {stop.epoch + 1}/{epochs} (that epoch is abandoned)"
    backup = f"its backup of epoch {found[0]} is intact" if found else \
        "no epoch had finished: resuming starts from the first"
    message = (f"Interrupted by {signal_name(stop.signum)} {when}. The run is kept and can be "
               f"resumed (status running; {backup}).\nResume it with: {resume_command(out_dir)}")
    print(f"\n{message}", file=sys.stderr, flush=True)
    return TrainingInterrupted(stop.signum, out_dir, message)


def _resume_run(run: Run, chief: bool):
    """The config and data of a run to resume; a failed run is running again."""
    cfg = run.config()
    data = _prepare(cfg, run.manifest_path, run.split_path)
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
