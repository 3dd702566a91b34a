"""The ``usmtl`` command line: a thin layer over plain Python functions.

Each command parses its arguments and calls one function a notebook could call too.
TensorFlow is imported only inside the commands that need it, so ``usmtl --help`` is instant.
Errors a user can act on (:class:`usmtl.errors.UsmtlError`) print without a traceback and
exit with status 2.
"""

from __future__ import annotations

import functools
import os
import sys

import click

from usmtl.cli_errors import friendly_errors as _friendly_errors
from usmtl.cli_errors import trust_option as _trust_option
from usmtl.cli_options import WholeSentenceGroup, console_options, figure_options
from usmtl.evaluation.cells import cell

# Preset names (usmtl.presets): shipped inside the package, so they work from a wheel too.
DEFAULT_CONFIG = "quickstart"
PAPER_CONFIG = "paper"


# USMTL_LOG_LEVEL (or usmtl --verbose) brings back TensorFlow's C++ logging.
_TF_LEVELS = {"debug": "0", "info": "0", "warning": "1", "error": "2", "quiet": "3"}


def _quiet_tensorflow():
    """Load TensorFlow without its start-up noise: the oneDNN and CUDA-stub notes it prints
    before its logging starts, and "failed call to cuInit" on a machine without a GPU, which
    reads like a failure and is none. Commands that run a model call this first."""
    level = os.environ.get("USMTL_LOG_LEVEL", "quiet").lower()
    if level not in _TF_LEVELS:
        raise click.UsageError(f"USMTL_LOG_LEVEL must be one of {sorted(_TF_LEVELS)}. "
                               f"Received: {level!r}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _TF_LEVELS[level])
    if level != "quiet" or "tensorflow" in sys.modules:
        return
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return  # a JAX run never imports TensorFlow (usmtl.training.jax_loop)
    # Those first lines are written to file descriptor 2 by C++ before absl logging starts,
    # so no variable reaches them: hide fd 2 while TensorFlow is imported, nothing else.
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                import tensorflow  # noqa: F401
            except ImportError:
                pass  # the command reports it when it needs TensorFlow
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@click.group(cls=WholeSentenceGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="usmtl")
@click.option("--verbose", is_flag=True,
              help="Show TensorFlow's own logging (same as USMTL_LOG_LEVEL=info).")
@console_options
def main(verbose):
    """Multi-task CNN for breast ultrasound: malignancy and axillary lymph-node metastasis,
    tied by a hierarchical hinge (Li, Guo et al., Front. Physiol. 13:882648, 2022)."""
    if verbose:
        os.environ["USMTL_LOG_LEVEL"] = "info"


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


@main.command("demo-data")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--patients", default=200, show_default=True, help="Number of synthetic patients.")
@click.option("--size", default=160, show_default=True, help="Approximate image side in pixels.")
@click.option("--seed", default=0, show_default=True)
@_friendly_errors
def demo_data(out, patients, size, seed):
    """Write synthetic ultrasound phantoms with every label, boxes and a manifest to OUT."""
    from usmtl.data.phantoms import make_phantoms

    frame = make_phantoms(out, n_patients=patients, size=size, seed=seed,
                          progress=sys.stderr.isatty())
    click.echo(f"Wrote {len(frame)} images of {frame['patient_id'].nunique()} patients: "
               f"{os.path.join(out, 'manifest.csv')}")


@main.command("check")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Warn about labels outside this config's task cohorts (a file or a preset; "
                   "default: paper, ALNM within the malignant masses).")
@click.option("--split-file", type=click.Path(exists=True),
              help="Judge near-duplicates across this split (a split.csv or a run directory; "
                   "default: the manifest's split column, if any).")
@click.option("--max-distance", type=click.IntRange(0, 256),
              help="Largest pHash distance (of 256 bits) of a near-duplicate pair "
                   "(default: 56, measured on BUS-BRA; see usmtl.data.duplicates).")
@click.option("--no-duplicates", is_flag=True, help="Skip the near-duplicate image search.")
@click.option("--duplicates-out", type=click.Path(dir_okay=False),
              help="Write every near-duplicate pair to this CSV.")
@click.option("--group-duplicates", "grouped_out", type=click.Path(dir_okay=False),
              help="Write a copy of the manifest to this CSV where near-duplicate images share "
                   "one patient id (the original in source_patient_id).")
@_friendly_errors
def check(manifest, config_path, split_file, max_distance, no_duplicates, duplicates_out,
          grouped_out):
    """Report every problem of a MANIFEST at once, with line numbers; exit 1 if any.
    Labels that are legitimate but ignored (ALNM filled on benign masses) are warnings, and
    so are near-duplicate images (re-encoded copies) across patients or splits."""
    from usmtl.config import load_config
    from usmtl.data.manifest import check_manifest, manifest_warnings

    if no_duplicates and (duplicates_out or grouped_out or split_file or max_distance is not None):
        raise click.UsageError("--no-duplicates skips the near-duplicate search: drop "
                               "--duplicates-out, --group-duplicates, --split-file and "
                               "--max-distance")
    problems = check_manifest(manifest, progress=sys.stderr.isatty())
    cfg = load_config(config_path or PAPER_CONFIG)
    for warning in manifest_warnings(manifest, cfg):
        click.echo(f"warning: {warning}", err=True)
    from usmtl.data.pack import is_pack

    if is_pack(manifest) and not no_duplicates:
        click.echo("Note: a packed crop file holds crops, not whole images: the near-duplicate "
                   "search needs the manifest it was packed from", err=True)
    elif not no_duplicates:
        _check_duplicates(manifest, split_file, max_distance, duplicates_out, grouped_out)
    for problem in problems:
        click.echo(problem)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {manifest}", err=True)
        sys.exit(1)
    click.echo(f"{manifest}: no problems found")


def _check_duplicates(manifest, split_file, max_distance, duplicates_out, grouped_out):
    """``usmtl check``'s near-duplicate part: warnings for pairs across patients or splits and
    for groups that mix labels (:mod:`usmtl.data.leakage`; they never change the exit
    status), the pair list and the grouped copy on request."""
    from usmtl.data import duplicates as dup
    from usmtl.data.splits import load_split
    from usmtl.errors import ManifestError
    from usmtl.run import write_csv_atomic

    try:
        parsed = dup.as_manifest(manifest)
    except ManifestError:
        return  # unreadable as a manifest: check_manifest reports why
    max_distance = dup.DEFAULT_MAX_DISTANCE if max_distance is None else max_distance
    splits = load_split(split_file) if split_file else None
    if splits is not None:
        unknown = sorted(set(parsed.patient_ids()) - set(splits))
        if unknown:
            click.echo(f"note: {len(unknown)} patient(s) of {manifest} are not in {split_file}; "
                       f"their pairs are not judged across splits: {unknown[:5]}"
                       f"{' ...' if len(unknown) > 5 else ''}", err=True)
    pairs = dup.manifest_pairs(parsed, max_distance, progress=sys.stderr.isatty())
    report = dup.duplicate_report(parsed, splits=splits, pairs=pairs)
    counts = dup.report_counts(report)
    head = f"near-duplicate image pair(s) (pHash distance <= {max_distance} of 256 bits)"
    if counts["across_patients"]:
        click.echo(f"warning: {counts['across_patients']} {head} across patients, "
                   f"{counts['across_splits']} of them across splits (the same picture on both "
                   f"sides of a split: leakage):", err=True)
        for line in dup.format_pairs(report):
            click.echo(f"  {line}", err=True)
    click.echo(f"{counts['pairs']} {head}: {counts['across_patients']} across patients "
               f"({counts['across_splits']} across splits), {counts['same_patient']} within one "
               f"patient", err=True)
    if duplicates_out:
        write_csv_atomic(duplicates_out, report)
        click.echo(f"Wrote {len(report)} near-duplicate pair(s) to {duplicates_out}", err=True)
    elif counts["across_patients"] > 10:
        click.echo("(--duplicates-out FILE lists them all)", err=True)
    if grouped_out:
        frame = dup.write_grouped_manifest(parsed, pairs, grouped_out)
        merged = frame["patient_id"] != frame["source_patient_id"]
        click.echo(f"Wrote {grouped_out}: near-duplicate images share one patient id: "
                   f"{frame.loc[merged, 'source_patient_id'].nunique()} patients merged into "
                   f"{frame.loc[merged, 'patient_id'].nunique()}; "
                   f"{frame['source_patient_id'].nunique()} -> {frame['patient_id'].nunique()} "
                   f"patients (the original id in source_patient_id)", err=True)
        if splits is not None:
            click.echo(f"note: {split_file} knows the old patient ids: make a new split from "
                       f"{grouped_out} (usmtl fit without --split-file)", err=True)
        if "split" in frame.columns:
            spans = frame[merged].groupby("patient_id")["split"].nunique()
            if (spans > 1).any():
                click.echo(f"warning: {int((spans > 1).sum())} merged patient(s) span several "
                           f"values of the 'split' column of {grouped_out}: give each one split "
                           f"(usmtl check {grouped_out} lists them)", err=True)
    from usmtl.data.leakage import mixed_label_problems

    for text in mixed_label_problems(parsed, pairs):
        click.echo(f"warning: {text}", err=True)


@main.command("presets")
@click.argument("name", required=False)
@_friendly_errors
def presets_command(name):
    """List the configs shipped with usmtl (pass a name to --config); with NAME, print
    that preset's YAML."""
    from usmtl.presets import preset_listing, yaml_text

    click.echo(yaml_text(name).rstrip("\n") if name else preset_listing())


@main.group("import")
def import_group():
    """Turn a public data set's layout into a manifest. Each importer says what it skipped
    and why, lists near-duplicate images in <out stem>_duplicates.csv and ends with
    'N rows written to OUT, K skipped: ...'."""


def _import_duplicate_options(group_default: str):
    """--group-duplicates/--no-group-duplicates (``group_default`` says when it is on),
    --max-distance and --no-duplicates."""

    def decorate(command):
        command = click.option("--no-duplicates", is_flag=True,
                               help="Skip the near-duplicate image search.")(command)
        command = click.option(
            "--max-distance", type=click.IntRange(0, 256),
            help="Largest pHash distance (of 256 bits) of a near-duplicate pair "
                 "(default: 56; see usmtl.data.duplicates).")(command)
        return click.option(
            "--group-duplicates/--no-group-duplicates", "group_duplicates", default=None,
            help=f"Give near-duplicate images one patient id, so that a split keeps them "
                 f"together (default: {group_default}).")(command)

    return decorate


def _run_import(run, *args, no_duplicates, group_duplicates, max_distance, **kwargs):
    """Call an importer with the options above; its report goes to stdout, its warnings to
    stderr as 'warning: ...' lines (not Python's file:line form)."""
    import warnings

    kwargs.update(duplicates=not no_duplicates, group_duplicates=group_duplicates,
                  progress=sys.stderr.isatty(), log=click.echo)
    if max_distance is not None:
        kwargs["max_distance"] = max_distance
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        run(*args, **kwargs)
    for warning in caught:
        click.echo(f"warning: {warning.message}", err=True)


@import_group.command("busbra")
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Manifest to write.")
@click.option("--box", "box_source", type=click.Choice(["mask", "bbox"]), default="mask",
              show_default=True, help="RoI from the pixel mask, or from the CSV's BBOX.")
@_import_duplicate_options("off: BUS-BRA has patient ids")
@_friendly_errors
def import_busbra(root, out, box_source, group_duplicates, max_distance, no_duplicates):
    """BUS-BRA (Gomez-Flores et al., Med. Phys. 2024): bus_data.csv, Images/, Masks/."""
    from usmtl.data.importers import import_busbra as run

    _run_import(run, root, out, box_source=box_source, no_duplicates=no_duplicates,
                group_duplicates=group_duplicates, max_distance=max_distance)


@import_group.command("busi")
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Manifest to write.")
@click.option("--include-normal", is_flag=True,
              help="Keep the 'normal' images (no lesion), as benign with the whole image as box "
                   "(default: skipped, and counted).")
@_import_duplicate_options("on: BUSI has no patient ids")
@_friendly_errors
def import_busi(root, out, include_normal, group_duplicates, max_distance, no_duplicates):
    """BUSI (ROOT/benign, ROOT/malignant, optionally ROOT/normal, ROOT being the BUSI folder
    or the one holding Dataset_BUSI_with_GT): one row per lesion mask, one patient per
    image, near-duplicate images grouped into one patient."""
    from usmtl.data.importers import import_busi as run

    _run_import(run, root, out, include_normal=include_normal, no_duplicates=no_duplicates,
                group_duplicates=group_duplicates, max_distance=max_distance)


@import_group.command("labelimg")
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False),
              help="CSV with an 'image' column and label columns.")
@click.option("--annotations", type=click.Path(exists=True, file_okay=False),
              help="Folder of LabelImg XML files (default: beside the images).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Manifest to write.")
@_import_duplicate_options("on only when the table has no patient_id column")
@_friendly_errors
def import_labelimg(images, labels, annotations, out, group_duplicates, max_distance,
                    no_duplicates):
    """A folder of images with LabelImg (Pascal VOC) boxes and a label table."""
    from usmtl.data.importers import import_labelimg as run

    _run_import(run, images, labels, out, annotations_dir=annotations,
                no_duplicates=no_duplicates, group_duplicates=group_duplicates,
                max_distance=max_distance)


# ---------------------------------------------------------------------------------------
# Training and prediction
# ---------------------------------------------------------------------------------------

_config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False),
    help="Experiment YAML, or a preset name (usmtl presets; default: quickstart).")
_set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config value, e.g. --set train.epochs=3 (repeatable).")


def _speed_options(command):
    """--strategy and --jit/--no-jit: shortcuts for --set train.strategy / train.jit_compile."""
    command = click.option(
        "--jit/--no-jit", "jit", default=None,
        help="XLA-compile the training step (default: train.jit_compile, auto = on with one GPU).")(command)
    return click.option(
        "--strategy", type=click.Choice(["auto", "default", "mirrored", "multiworker"]),
        help="tf.distribute strategy (default: train.strategy). multiworker reads TF_CONFIG; "
             "see the README's multi-worker recipe.")(command)


def _backend_option(command):
    """--backend: the Keras backend of this command (usmtl.backend), chosen before Keras
    is imported; the command itself does not see the option."""
    @functools.wraps(command)
    def wrapper(*args, backend=None, **kwargs):
        from usmtl.backend import use_backend

        use_backend(backend)
        return command(*args, **kwargs)

    return click.option(
        "--backend", type=click.Choice(["tensorflow", "jax"]),
        help="Keras backend (default: KERAS_BACKEND, else tensorflow). jax trains without "
             "TensorFlow: NumPy batches, Keras' fit, XLA (see the README).")(wrapper)


def _with_speed_overrides(overrides, strategy, jit) -> list:
    extra = [] if strategy is None else [f"train.strategy={strategy}"]
    extra += [] if jit is None else [f"train.jit_compile={str(jit).lower()}"]
    return list(overrides) + extra


@main.command("pack")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="The pack file to write (by convention NAME.pack).")
@click.option("--size", "image_size", type=click.IntRange(8, 4096),
              help="Crop side in pixels (default: the config's data.image_size).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Take data.image_size, roi_margin, square_roi and inpaint_marks from this "
                   "experiment YAML or preset (default: paper, 256 px, margin 0.1, square); "
                   "--size overrides its size.")
@_set_option
@click.option("--split-file", type=click.Path(exists=True),
              help="Store this split as the split column (a split.csv or a run directory).")
@click.option("--codec", type=click.Choice(["auto", "png", "webp", "jpeg"]), default="auto",
              show_default=True, help="auto: lossless WebP (see usmtl.data.pack).")
@click.option("--quality", type=click.IntRange(1, 100),
              help="Lossy quality for webp or jpeg (webp without it: lossless; jpeg: 95).")
@click.option("--workers", type=click.IntRange(1, 64), help="Cropping threads (default: cores, max 8).")
@_friendly_errors
def pack_command(manifest, out, image_size, config_path, overrides, split_file, codec, quality,
                 workers):
    """Crop every row of MANIFEST once and write the crops, labels, patient ids and split
    into one file that fit, experiment and bench read in place of the manifest (no images
    or TensorFlow needed where it is read)."""
    from usmtl.config import load_config
    from usmtl.data.pack import write_pack

    data = load_config(config_path or PAPER_CONFIG, list(overrides)).data
    summary = write_pack(manifest, out, image_size=image_size or data.image_size,
                         roi_margin=data.roi_margin, square_roi=data.square_roi,
                         inpaint_marks=data.inpaint_marks, split_file=split_file, codec=codec,
                         quality=quality, workers=workers, progress=sys.stderr.isatty())
    click.echo(summary.line())


@main.command("fit")
@_config_option
@_set_option
@click.option("--variant", help="single-bm, single-alnm, multitask, multitask-hl or single:<task>.")
@click.option("--manifest", type=click.Path(dir_okay=False), help="Manifest CSV.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--split-file", type=click.Path(), help="Reuse a split (split.csv or a run directory).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@_speed_options
@_friendly_errors
@_backend_option
def fit_command(config_path, overrides, variant, manifest, out, split_file, resume, strategy, jit):
    """Train a model and write a run directory."""
    overrides = _with_speed_overrides(overrides, strategy, jit)
    _quiet_tensorflow()
    from usmtl.config import load_config
    from usmtl.errors import UsmtlError
    from usmtl.evaluation.metrics import format_table
    from usmtl.training.fit import fit

    cfg = None
    if not resume:
        if manifest is None:
            raise UsmtlError("usmtl fit needs --manifest (or --resume with an existing --out)")
        cfg = load_config(config_path or DEFAULT_CONFIG, list(overrides), variant)
    elif config_path or overrides or variant or manifest or split_file:
        raise UsmtlError("--resume uses the run's own config, manifest and split; drop --config, "
                         "--set, --strategy, --jit, --variant, --manifest and --split-file")
    result = fit(cfg, manifest, out, split_file=split_file, resume=resume)
    click.echo(f"\nRun: {result.run_dir} ({result.seconds:.0f} s); best epoch: {result.best_epoch}")
    if result.val_metrics:
        click.echo("Validation metrics (best checkpoint, threshold 0.5):")
        click.echo(format_table(result.val_metrics))


@main.command("predict")
@click.argument("model", type=click.Path(exists=True))
@click.argument("input", type=click.Path(exists=True, dir_okay=False))
@click.option("--box", help="x_min,y_min,x_max,y_max for a single image (0-based, max exclusive).")
@click.option("--split", type=click.Choice(["train", "val", "test"]),
              help="Only rows of this split (uses the run's split.csv).")
@click.option("--out", type=click.Path(dir_okay=False), help="CSV to write (default: print).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--uncalibrated", is_flag=True,
              help="The heads' raw scores, even where 'usmtl calibrate' stored a calibration.")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True,
              help="Test-time augmentation: flip averages the crop and its mirror.")
@_trust_option
@_friendly_errors
@_backend_option
def predict_command(model, input, box, split, out, batch_size, uncalibrated, tta, trust_model):
    """Per-task probabilities for an image (with --box) or a manifest, from a run directory,
    a saved .keras model, or an export of 'usmtl export' (a SavedModel folder or a .tflite
    file); flags rows where a child exceeds its parent. A calibrated model's p_<task> is
    calibrated (raw_<task>: the head's own score), and the output says so."""
    from usmtl.outputs import require_output_file

    if out:
        require_output_file(out, inputs=[model, input])  # before the work
    _quiet_tensorflow()
    from usmtl.evaluation.recalibrate import describe
    from usmtl.predict import predict

    frame = predict(model, input, box=box, split=split, batch_size=batch_size,
                    calibrated=not uncalibrated, trust_model=trust_model, tta=tta)
    calibrated = any(c.startswith("raw_") for c in frame.columns)
    if calibrated:
        from usmtl.formats import open_model

        click.echo(f"Scores: {describe(open_model(model).calibration)}; raw_<task> columns "
                   f"hold the heads' own scores", err=True)
    if out:
        from usmtl.atomic import write_csv_atomic

        write_csv_atomic(out, frame)
        click.echo(f"Wrote {len(frame)} rows to {out}; hierarchy violations: "
                   f"{int(frame['hierarchy_violation'].sum())}")
    else:
        click.echo(frame.to_csv(index=False), nl=False)


@main.command("ensemble")
@click.argument("out", type=click.Path(file_okay=False))
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--rule", type=click.Choice(["mean", "logit"]), default="mean", show_default=True,
              help="mean: the mean probability; logit: the sigmoid of the mean logit.")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True,
              help="flip: every member also sees the mirrored crop.")
@_friendly_errors
def ensemble_command(out, models, rule, tta):
    """Make an ensemble of several models (runs, .keras files, exports; an experiment folder
    stands for all its runs): a folder that predict, evaluate, validate, bench and export open
    like one model."""
    _quiet_tensorflow()
    from usmtl.formats.ensemble import write_ensemble

    write_ensemble(out, models, rule, tta)
    from usmtl.formats import open_model

    opened = open_model(out)
    click.echo(f"Ensemble of {len(opened.model.members)} models ({rule} of probabilities"
               f"{', with the mirrored crop' if tta == 'flip' else ''}): {out}")


# ---------------------------------------------------------------------------------------
# Evaluation and the paper's protocol
# ---------------------------------------------------------------------------------------


@main.command("evaluate")
@figure_options
@click.argument("source", type=click.Path(exists=True))
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False),
              help="For a run: evaluate on another manifest (default: the run's own). For a "
                   "prediction CSV: where --by columns are read, matched by image.")
@click.option("--split", type=click.Choice(["train", "val", "test"]),
              help="For a run: the split scored (default test). For a prediction CSV: keep the "
                   "rows of its split column (default: every row).")
@click.option("--threshold", default=0.5, show_default=True)
@click.option("--patient", "patient_how", default="mean", show_default=True,
              type=click.Choice(["mean", "max"]), help="A patient's score from its images.")
@click.option("--bootstrap", "n_boot", default=1000, show_default=True,
              help="Patient resamples for the 95% CIs.")
@click.option("--edges", help="For a prediction CSV: 'parent>child,...' edges for inconsistency "
                                "(quote it: > is a shell redirect).")
@click.option("--cohort", "cohorts", help="For a prediction CSV: 'child=parent,...' scores each child "
                                         "only where its parent's label is 1 (ALNM within the "
                                         "malignant masses, as the paper). A run applies its "
                                         "config's cohorts itself.")
@click.option("--val-predictions", type=click.Path(exists=True, dir_okay=False),
              help="For a prediction CSV: validation predictions for the Youden threshold.")
@click.option("--out", type=click.Path(file_okay=False), help="Output folder (default: the run, "
              "RUN/eval-<split>, or <csv>-eval).")
@click.option("--skip-unlabelled", is_flag=True,
              help="Score only the tasks with labels (default: a task without labels is an error).")
@click.option("--by", "by", multiple=True, metavar="COLUMN",
              help="Subgroup analysis by this column (repeatable): per-group AUC, sensitivity, "
                   "specificity, a heterogeneity test and a forest plot. Read from the "
                   "predictions, else from the manifest (a run's split rows; for a prediction "
                   "CSV, --manifest matched by image).")
@_friendly_errors
def evaluate_command(source, manifest, split, threshold, patient_how, n_boot, edges, cohorts,
                     val_predictions, out, skip_unlabelled, by):
    """Metrics with patient-bootstrap CIs, ROC curves, calibration, operating points, decision
    curves and inconsistency rates for a run directory or a prediction CSV (subgroups with
    --by); writes metrics.json, CSV tables, figures and report.md."""
    _quiet_tensorflow()
    from usmtl.evaluation.evaluate import (compact_table, evaluate_file, evaluate_run,
                                           parse_cohorts, parse_edges)
    from usmtl.outputs import require_output_dir

    by = list(by) or None
    if os.path.isdir(source):
        report = evaluate_run(source, manifest, split or "test", threshold, patient_how, n_boot,
                              skip_unlabelled=skip_unlabelled, by=by, out_dir=out)
    else:
        out = out or os.path.splitext(source)[0] + "-eval"
        require_output_dir(out)
        report = evaluate_file(source, out, parse_edges(edges), threshold, val_predictions,
                               patient_how, n_boot, cohorts=parse_cohorts(cohorts),
                               skip_unlabelled=skip_unlabelled, by=by, manifest=manifest,
                               split=split)
    for note in report.get("notes", []):
        click.echo(note, err=True)
    for task, why in (report.get("skipped_tasks") or {}).items():
        click.echo(f"skipped {task}: {why}", err=True)
    click.echo(compact_table(report))
    for edge, r in report["inconsistency"].items():
        click.echo(f"inconsistent {edge}: hard {r['hard']:.3f}, soft {r['soft']:.3f}")
    for column, per_task in (report.get("subgroups") or {}).items():
        for task, result in per_task.items():
            h = result["heterogeneity"]
            test = (f"Q {h['q']:.2f}, df {h['df']}, p {h['p']:.3g}, I² {100 * h['i2']:.0f}%"
                    if h["k"] >= 2 else "not testable (fewer than 2 testable groups)")
            click.echo(f"subgroups by {column}, {task}: {h['k']} testable group(s); {test}")
    click.echo(f"Report: {os.path.join(report['out_dir'], 'report.md')}")


@main.command("calibrate")
@figure_options
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--method", type=click.Choice(["platt", "temperature"]), default="platt",
              show_default=True, help="platt: sigmoid(a*logit(p)+b); temperature: sigmoid(logit(p)/T).")
@click.option("--remove", is_flag=True, help="Delete the run's calibration (raw scores again).")
@_friendly_errors
def calibrate_command(run, method, remove):
    """Fit a recalibration of each head on RUN's validation split and store it in the run
    (calibration.json); predict, evaluate, validate and export then apply or carry it.
    Prints Brier, ECE, calibration intercept and slope before -> after."""
    _quiet_tensorflow()
    from usmtl.evaluation.recalibrate import calibrate_run, format_figures

    result = calibrate_run(run, method, remove)
    if remove:
        click.echo(f"{run}: calibration removed; scores are the heads' own again")
        return
    for task, why in result["skipped"].items():
        click.echo(f"warning: {task} not calibrated: {why}", err=True)
    click.echo(format_figures(result))
    click.echo(f"\nval is the fit's own data (in-sample); test is not. Stored "
               f"{os.path.join(run, 'calibration.json')} ({method}: "
               f"{', '.join(result['calibration']['tasks'])})")


@main.command("validate")
@figure_options
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.argument("external", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Report folder.")
@click.option("--threshold", default=0.5, show_default=True)
@click.option("--bootstrap", "n_boot", default=1000, show_default=True,
              help="Patient-bootstrap resamples of every CI.")
@click.option("--skip-unlabelled", is_flag=True,
              help="Compare only the tasks the external set has labels for.")
@_friendly_errors
def validate_command(run, external, out, threshold, n_boot, skip_unlabelled):
    """External validation: score RUN on its internal test split and on the EXTERNAL
    manifest (every row), with the calibration and thresholds of its internal validation;
    writes a side-by-side report (validation.md) with the change in each figure."""
    _quiet_tensorflow()
    from usmtl.evaluation.validate import validate

    result = validate(run, external, out, threshold, n_boot, skip_unlabelled=skip_unlabelled)
    for note in result["notes"]:
        click.echo(note, err=note.startswith("WARNING"))
    rows = result["rows"]
    for row in rows:
        if row["figure"] in ("AUC", "calibration slope", "Brier score"):
            click.echo(f"{row['task']:>14}  {row['figure']:<22} internal {cell(row['internal'])}  "
                       f"external {cell(row['external'])}  change {cell(row['change'], '+.3f')}")
    click.echo(f"Report: {os.path.join(out, 'validation.md')}")


@main.command("report")
@figure_options
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="The card (default RUN/model_card.md).")
@click.option("--by", multiple=True, help="Manifest column for subgroups (repeatable), e.g. device.")
@click.option("--validation", type=click.Path(exists=True, file_okay=False),
              help="The folder of a 'usmtl validate' report to include.")
@click.option("--audit", is_flag=True, help="Run the shortcut audit (Grad-CAM over the test split).")
@click.option("--bootstrap", "n_boot", default=1000, show_default=True,
              help="Patient-bootstrap resamples of every CI.")
@_friendly_errors
def report_command(run, out, by, validation, audit, n_boot):
    """A model card for RUN: intended use, model, data and split, performance with CIs,
    calibration, decision curves and operating points, subgroups, external validation, the
    shortcut audit and limitations, in one Markdown file."""
    _quiet_tensorflow()
    from usmtl.model_card import write_model_card

    card = write_model_card(run, out, by=by, validation=validation, audit=audit, n_boot=n_boot)
    click.echo(card["toc"])
    click.echo(f"Wrote {card['path']}")


@main.command("compare")
@click.argument("a", type=click.Path(exists=True))
@click.argument("b", type=click.Path(exists=True))
@click.option("--threshold", default=0.5, show_default=True)
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["train", "val", "test"]), help="Split used for run directories.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the comparison as JSON.")
@click.option("--skip-unlabelled", is_flag=True,
              help="Compare only the shared tasks with labels (default: an unlabelled one is an error).")
@_friendly_errors
def compare_command(a, b, threshold, split, out, skip_unlabelled):
    """Paired DeLong (AUC) and McNemar (accuracy) tests between two runs or prediction CSVs."""
    _quiet_tensorflow()
    from usmtl.evaluation.compare import compare, format_comparison
    from usmtl.run import write_json_atomic

    result = compare(a, b, threshold, split, skip_unlabelled=skip_unlabelled)
    click.echo(format_comparison(result, ("A", "B")))
    click.echo(f"A = {a}\nB = {b}")
    if out:
        write_json_atomic(out, result)


@main.command("experiment")
@_config_option
@_set_option
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Experiment directory.")
@click.option("--repeats", default=5, show_default=True)
@click.option("--protocol", type=click.Choice(["variants", "burden"]), default="variants",
              show_default=True,
              help="variants: the paper's Tables 2-3 (Single-BM, Single-ALNM, Multi-Task, "
                   "Multi-Task + HL). burden: Table 4, one two-head model per threshold "
                   "ALN count >= k as a separate task.")
@click.option("--variants", help="Comma-separated variants (default: the four for 'variants', "
                                 "multitask-hl for 'burden').")
@click.option("--thresholds", default="1,2,3,4", show_default=True,
              help="burden: the k of 'count >= k'.")
@click.option("--burden-column", default="aln_count", show_default=True,
              help="burden: the manifest column with the number of metastatic nodes.")
@click.option("--radiomics", "radiomics_features", type=click.Path(exists=True, dir_okay=False),
              help="Features of 'usmtl radiomics extract': the radiomics baseline fitted on the "
                   "same split (variants: table2.md, CNN against radiomics; burden: a row per "
                   "threshold).")
@click.option("--paper", is_flag=True,
              help="Show the published figure of Li et al. (2022) beside each cell of "
                   "table2/3/4.md (the root task as their malignancy, its first child as ALNM).")
@click.option("--interval", type=click.Choice(["paper", "mean"]), default="paper", show_default=True,
              help="Interval in the tables: paper = mean ± t·SD (Li et al.), mean = the CI of the "
                   "mean; summary.csv holds both.")
@click.option("--split-file", type=click.Path(), help="Reuse a split (split.csv or a run directory).")
@click.option("--folds", help="Cross-validate on given patient folds: a manifest column (BUS-BRA: "
                              "fold, the authors' official folds) or a CSV of patient_id,fold or "
                              "image,fold. Writes cv.md, oof.csv, cv_folds.csv, cv_summary.csv.")
@click.option("--cv", type=int, help="Cross-validate on K drawn folds (patient-level, stratified, "
                                     "seeded by data.split_seed).")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True,
              help="Cross-validation: also score every model with its crops' mirror averaged in.")
@click.option("--ensemble-rule", type=click.Choice(["mean", "logit"]), default="mean",
              show_default=True,
              help="Cross-validation: how the repeats' (and TTA's) probabilities combine.")
@_speed_options
@_friendly_errors
@_backend_option
def experiment_command(config_path, overrides, manifest, out, repeats, protocol, variants,
                       thresholds, burden_column, radiomics_features, paper, interval, split_file,
                       folds, cv, tta, ensemble_rule, strategy, jit):
    """The paper's protocol on one fixed test split, every run repeated; writes table3.md/.csv
    (the paper's Table 3), tables.md, summary.csv, pvalues.csv; with --radiomics table2.md;
    with --protocol burden table4.md/.csv. Re-running resumes."""
    _quiet_tensorflow()
    from usmtl.config import VARIANTS, load_config
    from usmtl.errors import UsmtlError
    from usmtl.experiment import BURDEN_VARIANTS, run_burden, run_experiment

    cfg = load_config(config_path or DEFAULT_CONFIG, _with_speed_overrides(overrides, strategy, jit))
    default = VARIANTS if protocol == "variants" else BURDEN_VARIANTS
    chosen = [v.strip() for v in variants.split(",") if v.strip()] if variants else list(default)
    if folds is not None or cv is not None:
        from usmtl.crossval import run_cv

        if protocol != "variants" or split_file or radiomics_features or paper:
            raise UsmtlError("--folds/--cv cross-validate the variants; they take none of "
                             "--protocol burden, --split-file, --radiomics, --paper. Received: "
                             f"protocol={protocol}, split_file={split_file}, "
                             f"radiomics={radiomics_features}, paper={paper}")
        result = run_cv(cfg, manifest, out, folds, cv, repeats, chosen, tta, ensemble_rule)
        click.echo(result["markdown"])
        click.echo(f"Cross-validation: {os.path.join(out, 'cv.md')}, out-of-fold predictions: "
                   f"{os.path.join(out, 'oof.csv')}")
        return
    if tta != "none":
        raise UsmtlError(f"--tta scores the models of a cross-validation (--folds/--cv); for one "
                         f"run use 'usmtl predict --tta'. Received: --tta {tta}")
    if protocol == "burden":
        ks = _floats(thresholds)
        result = run_burden(cfg, manifest, out, repeats, ks, burden_column, chosen, split_file,
                            radiomics_features, interval=interval, paper=paper)
        click.echo(result["markdown"])
        click.echo(f"Table 4: {os.path.join(out, 'table4.md')}")
        return
    result = run_experiment(cfg, manifest, out, repeats, chosen, split_file, interval=interval,
                            paper=paper, radiomics=radiomics_features)
    click.echo(result["table3"])
    click.echo(f"Tables: {os.path.join(out, 'table3.md')} (the paper's Table 3), "
               f"{os.path.join(out, 'tables.md')} (p-values, inconsistency)"
               + (f", {os.path.join(out, 'table2.md')}" if "table2" in result else ""))


def _floats(text):
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"a comma-separated list of numbers. Received: {text!r}")


@main.command("tune")
@_config_option
@_set_option
@click.option("--manifest", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--margins", default="0,0.05,0.1,0.2", show_default=True)
@click.option("--weights", default="0.01,0.05,0.1,0.5", show_default=True, help="lambda values.")
@click.option("--child-weights", help="Loss weights of the child tasks to try, e.g. 1,0.5,0.1 "
                                      "(default: the config's).")
@click.option("--select", default="mean", show_default=True,
              help="What the best point maximises: mean (validation AUC over tasks) or a task's "
                   "validation AUC, e.g. malignancy.")
@click.option("--split-file", type=click.Path())
@_friendly_errors
@_backend_option
def tune_command(config_path, overrides, manifest, out, margins, weights, child_weights, select,
                 split_file):
    """Grid search on the validation split: hinge margin m, weight lambda and, with
    --child-weights, the children's loss weight."""
    _quiet_tensorflow()
    from usmtl.config import load_config
    from usmtl.experiment import tune

    cfg = load_config(config_path or DEFAULT_CONFIG, list(overrides))
    frame = tune(cfg, manifest, out, _floats(margins), _floats(weights), split_file,
                 child_weights=_floats(child_weights) if child_weights else None, select=select)
    click.echo(frame.drop(columns=["run"]).to_string(index=False, float_format="%.4f"))
    if frame["score"].notna().any():
        best = frame.loc[frame["score"].idxmax()]
        child = f", child weight {best['child_weight']:g}" if "child_weight" in best else ""
        click.echo(f"Best: m={best['margin']:g}, lambda={best['weight']:g}{child} "
                   f"(validation AUC, {select}: {best['score']:.4f})")


def _pairs(items, what: str, form: str = "LABEL=VALUE") -> list[tuple[str, str]]:
    pairs = []
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"{what} must look like {form}. Received: {item!r}")
        label, value = item.split("=", 1)
        pairs.append((label.strip(), value.strip()))
    return pairs


@main.command("ablation")
@click.option("--arm", "arms", multiple=True, required=True, metavar="LABEL=EXPERIMENT:VARIANT",
              help="An arm: one variant of an experiment directory (repeatable; the first is "
                   "the reference).")
@click.option("--task", required=True, help="The task compared, e.g. malignancy.")
@click.option("--reference", help="The reference arm's label (default: the first).")
@click.option("--select", "selects", multiple=True, metavar="LABEL=ARM,ARM,...",
              help="An arm chosen per repeat, among these arms, on the task's validation AUC.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the table (.md; a .csv beside).")
@_friendly_errors
def ablation_command(arms, task, reference, selects, out):
    """Controls from several experiments (sharing one split and seeds) against a reference:
    test AUC, paired difference, t-tests, DeLong, the child within its cohort, validation."""
    from usmtl.ablation import Arm, ablation_markdown, ablation_table
    from usmtl.run import write_csv_atomic, write_text_atomic

    parsed = []
    for label, value in _pairs(arms, "--arm", "LABEL=EXPERIMENT:VARIANT"):
        if ":" not in value:
            raise click.BadParameter(f"--arm must look like LABEL=EXPERIMENT:VARIANT. "
                                     f"Received: {label}={value}")
        experiment, variant = value.rsplit(":", 1)
        parsed.append(Arm(label, experiment, variant))
    select = {label: [n.strip() for n in names.split(",") if n.strip()]
              for label, names in _pairs(selects, "--select", "LABEL=ARM,ARM,...")}
    frame = ablation_table(parsed, task, reference, select)
    text = ablation_markdown(frame, task, reference or parsed[0].label)
    click.echo(text)
    if out:
        write_text_atomic(out, text)
        write_csv_atomic(os.path.splitext(out)[0] + ".csv", frame)


# ---------------------------------------------------------------------------------------
# Radiomics baseline
# ---------------------------------------------------------------------------------------


@main.group("radiomics")
def radiomics_group():
    """The radiomics baseline: PyRadiomics features, Boruta, random forest (needs the
    'radiomics' extra; see the README)."""


@radiomics_group.command("extract")
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Feature CSV to write.")
@click.option("--mask", "mask_source", type=click.Choice(["box", "mask"]), default="box",
              show_default=True, help="RoI: the box, or the manifest's pixel mask.")
@click.option("--margin", default=0.0, show_default=True,
              help="Widen the box by this fraction of its size on each side.")
@click.option("--bin-width", default=8.0, show_default=True, help="Grey-level bin width (0..255 scale).")
@click.option("--jobs", default=1, show_default=True, help="Worker processes.")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False),
              help="Per-image cache folder (default: <out>.cache).")
@_friendly_errors
def radiomics_extract(manifest, out, mask_source, margin, bin_width, jobs, cache_dir):
    """Extract 93 intensity and texture features per image of MANIFEST (2D, grey).

    Re-running extracts only new images; an image that fails is listed by manifest line and
    the exit status is 1, with every other image's features written."""
    from usmtl.radiomics.extract import RadiomicsSettings, extract_features

    settings = RadiomicsSettings(mask=mask_source, margin=margin, bin_width=bin_width)
    table = extract_features(manifest, out, settings, jobs=jobs, cache_dir=cache_dir,
                             progress=sys.stderr.isatty())
    cached = len(table.frame) - (table.extracted - len(table.failures))
    speed = (f", {table.extracted / table.seconds:.1f} images/s" if table.extracted else "")
    click.echo(f"Wrote {len(table.frame)} images x {table.n_features} features to {out} "
               f"({table.extracted} extracted in {table.seconds:.1f} s{speed}; {cached} from the cache)")
    for failure in table.failures:
        click.echo(failure, err=True)
    if table.failures:
        click.echo(f"{len(table.failures)} image(s) failed; their rows are not in {out}", err=True)
        sys.exit(1)


@radiomics_group.command("fit")
@click.argument("features", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--split-file", type=click.Path(exists=True),
              help="A CNN run directory (its split and config) or a split CSV.")
@_config_option
@_set_option
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False),
              help="Default: the manifest the features were extracted from.")
@click.option("--seed", default=0, show_default=True)
@click.option("--boruta-iterations", default=100, show_default=True)
@click.option("--trees", default=500, show_default=True, help="Trees of each random forest.")
@click.option("--jobs", default=1, show_default=True)
@_friendly_errors
def radiomics_fit(features, out, split_file, config_path, overrides, manifest, seed,
                  boruta_iterations, trees, jobs):
    """Boruta and a random forest (max depth 300) per task on the training patients;
    writes validation and test predictions that 'usmtl evaluate' and 'usmtl compare' read."""
    from usmtl.config import load_config
    from usmtl.evaluation.metrics import format_table
    from usmtl.radiomics.model import RadiomicsModelSettings, fit_radiomics

    run_given = split_file is not None and os.path.isdir(split_file)
    cfg = None
    if config_path or overrides or not run_given:
        cfg = load_config(config_path or DEFAULT_CONFIG, list(overrides))
    settings = RadiomicsModelSettings(seed=seed, boruta_iterations=boruta_iterations,
                                      trees=trees, jobs=jobs)
    result = fit_radiomics(features, out, cfg, split_file, manifest, settings)
    for name, task in result["tasks"].items():
        click.echo(f"{name}: {len(task['selected'])} feature(s) selected ({task['boruta']}) "
                   f"on {task['train_images']} training images")
    for split in ("val", "test"):
        click.echo(f"\n{split}:")
        click.echo(format_table({name: task[f"{split}_metrics"] for name, task in result["tasks"].items()}))
    for name, why in result["skipped_tasks"].items():
        click.echo(f"Task {name} skipped: {why}", err=True)
    if result["skipped_rows"]:
        click.echo(f"{len(result['skipped_rows'])} row(s) without features were skipped, e.g. "
                   f"{result['skipped_rows'][0]}", err=True)
    click.echo(f"\nWrote {out}")


@radiomics_group.command("predict")
@click.argument("fit_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("features", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="CSV to write (default: print).")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False),
              help="Manifest whose labels go into y_<task> (default: the one the features were "
                   "extracted from).")
@_friendly_errors
def radiomics_predict(fit_dir, features, out, manifest):
    """Probabilities of a fitted radiomics model (FIT_DIR of 'usmtl radiomics fit') for new
    images, from their features ('usmtl radiomics extract' with the same settings), in the
    prediction format of 'usmtl predict'."""
    from usmtl.radiomics.model import predict_radiomics
    from usmtl.run import write_csv_atomic

    frame = predict_radiomics(fit_dir, features, manifest_path=manifest)
    if frame.attrs.get("labels"):
        click.echo(f"labels: {frame.attrs['labels']}", err=True)
    if out:
        write_csv_atomic(out, frame)
        click.echo(f"Wrote {len(frame)} prediction(s) to {out}")
    else:
        click.echo(frame.to_csv(index=False), nl=False)


# ---------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------


class _ExportFormat(click.Choice):
    """``--format``: the export formats registered in :mod:`usmtl.formats`, read when the
    command runs (a format registered after this module was imported is a choice too)."""

    def __init__(self):
        super().__init__((), case_sensitive=True)

    @property
    def choices(self):
        from usmtl.formats import export_formats

        return tuple(f.name for f in export_formats())

    @choices.setter
    def choices(self, value):
        pass  # always the registry's

    def get_invalid_choice_message(self, value, ctx):
        from usmtl.formats import unknown_export_format

        return unknown_export_format(value)


@main.command("export")
@click.argument("run", type=click.Path(exists=True))
@click.option("--format", "fmt", required=True, type=_ExportFormat(),
              help="A registered export format: savedmodel (TF Serving: OUT/<name>/<version>/), "
                   "tflite (OUT/model.tflite)... (usmtl.formats).")
@click.option("--out", required=True, type=click.Path(),
              help="Model base folder (savedmodel) or a new, empty folder (tflite).")
@click.option("--quantize", default="none", show_default=True, metavar="MODE",
              help="tflite only: none, float16, dynamic or int8 (int8 needs --manifest).")
@click.option("--manifest", type=click.Path(dir_okay=False),
              help="Crops for parity and AUCs (the run's test rows) and int8 calibration "
                   "(its training rows). Default: parity on random images.")
@click.option("--name", help="Model name in the serving path (default: the config's name).")
@click.option("--version", "version", type=int,
              help="SavedModel version (default: the next free integer; never overwrites).")
@click.option("--images", default=64, show_default=True, help="Parity images.")
@click.option("--calibration-images", default=100, show_default=True,
              help="int8 representative images.")
@click.option("--tolerance", type=float,
              help="Max |probability difference| vs Keras (default: savedmodel 1e-5, tflite "
                   "none 1e-4, float16 5e-3, dynamic 5e-2, int8 1e-1).")
@click.option("--threads", type=int, help="LiteRT threads for the latency (default: all cores).")
@click.option("--latency-runs", default=30, show_default=True, help="Timed single-image calls.")
@_friendly_errors
def export_command(run, fmt, out, quantize, manifest, name, version, images, calibration_images,
                   tolerance, threads, latency_runs):
    """Export RUN (a run directory or .keras file) as a TF Serving SavedModel or a TFLite file,
    then check it against the Keras model: max |diff| per output, AUC change, size and CPU
    latency, in parity.json. Exits 1 when parity fails."""
    _quiet_tensorflow()
    from usmtl.export import export

    result = export(run, fmt, out, quantize=quantize, manifest=manifest, name=name,
                    version=version, images=images, calibration_images=calibration_images,
                    tolerance=tolerance, threads=threads, latency_runs=latency_runs,
                    log=click.echo)
    click.echo(f"Exported: {result.path}\nReport: {result.sidecar}/parity.json")
    if not result.passed:
        sys.exit(1)


# ---------------------------------------------------------------------------------------
# Explain
# ---------------------------------------------------------------------------------------

_CAM_METHODS = ("gradcam", "gradcam++")


@main.command("explain")
@figure_options
@click.argument("run", type=click.Path(exists=True))
@click.argument("input", type=click.Path(exists=True, dir_okay=False))
@click.option("--task", "tasks", multiple=True, required=True,
              help="Task head to explain (repeatable), or 'all' for every head.")
@click.option("--method", type=click.Choice(_CAM_METHODS), default="gradcam", show_default=True,
              help="Grad-CAM (Selvaraju 2017) or Grad-CAM++ (Chattopadhay 2018).")
@click.option("--layer", help="Layer to take the CAM at (default: the backbone's last "
                              "convolutional block, the layer feeding global pooling).")
@click.option("--box", help="x_min,y_min,x_max,y_max for a single image (0-based, max exclusive).")
@click.option("--split", type=click.Choice(["train", "val", "test"]),
              help="Only rows of this split (uses the run's split.csv).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N rows (after --split).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--compare", "compare_run", type=click.Path(exists=True),
              help="A second run (e.g. single-alnm) explained on the same images, with "
                   "side_by_side.png as in the paper's Figure 6.")
@click.option("--batch-size", default=16, show_default=True)
@click.option("--evidence", type=click.Choice(["positive", "negative"]), default="positive",
              show_default=True,
              help="positive: what raises each head's probability (Grad-CAM); negative: what "
                   "lowers it, the map to look at when the positive one is all zero.")
@click.option("--audit", is_flag=True,
              help="Shortcut audit instead of heatmaps: CAM mass on the lesion box, mask and "
                   "burned-in marks against their area shares, with WARNING lines "
                   "(audit.csv, audit.json, audit.md).")
@click.option("--bootstrap", "n_boot", default=1000, show_default=True,
              type=click.IntRange(min=0),
              help="--audit: patient-bootstrap resamples for the ratios' CIs (0: none).")
@_friendly_errors
def explain_command(run, input, tasks, method, layer, box, split, limit, out, compare_run,
                    batch_size, evidence, audit, n_boot):
    """Grad-CAM heatmaps of task heads of RUN (a run directory or .keras file) for an image
    (with --box) or a manifest, on the RoI exactly as the model sees it.

    \b
    Writes to --out, per image and task:
      <stem>_<task>.npy   float32 heatmap in [0, 1], shape image_size x image_size
      <stem>_<task>.png   the RoI and the RoI under the heatmap (blue 0 .. red 1)
    and contact_sheet.png (first 64 images), explanations.csv (probability, label, share
    of CAM mass inside the box / mask). With --compare RUN2: compare-<RUN2>/ and
    side_by_side.png (first 16 images, the tasks both runs have).

    \b
    With --audit, instead: audit.csv (per image and task), audit.json and audit.md (per
    task: CAM mass share on the lesion box / mask / marks against their area share, the
    ratio with a patient-bootstrap CI; WARNING when no better than uniform).

    \b
    Example:
      usmtl explain runs/multitask-hl data/manifest.csv --task malignancy --task alnm \\
          --split test --limit 12 --out runs/explain --compare runs/single-alnm
      usmtl explain runs/multitask-hl data/manifest.csv --task all --split test \\
          --audit --out runs/audit
    """
    _quiet_tensorflow()
    task_list = None if "all" in tasks else list(tasks)
    if audit:
        from usmtl.errors import UsmtlError
        from usmtl.explain.audit import shortcut_audit

        if compare_run:
            raise UsmtlError(f"--audit takes one run: audit each run on its own. "
                             f"Received: --compare {compare_run}")
        result = shortcut_audit(run, input, split, task_list, method=method, layer=layer,
                                limit=limit, out=out, box=box, batch_size=batch_size,
                                evidence=evidence, n_boot=n_boot,
                                progress=sys.stderr.isatty())
        click.echo(result["markdown"].split("## Warnings")[0].rstrip())
        for line in result["warnings"]:
            click.echo(line)
        click.echo(f"Wrote {', '.join(result['files'])}")
        return
    from usmtl.explain import explain

    frame = explain(run, input, task_list, method=method, layer=layer, box=box, split=split,
                    limit=limit, out=out, compare=compare_run, batch_size=batch_size,
                    progress=sys.stderr.isatty(), evidence=evidence)
    for name, rows in frame.groupby("run", sort=False):
        click.echo(f"{name}: {len(rows)} heatmaps ({rows['image'].nunique()} image(s) x "
                   f"{rows['task'].nunique()} task(s), layer {rows['layer'].iloc[0]}); "
                   f"CAM mass inside the box {rows['cam_in_box'].mean():.2f} "
                   f"(box area {rows['box_fraction'].mean():.2f} of the RoI); "
                   f"{int(rows['cam_all_zero'].sum())} of {len(rows)} maps all zero (no "
                   f"{evidence} evidence at that layer)")
    click.echo(f"Wrote {os.path.join(out, 'explanations.csv')} and the heatmaps to {out}")
    click.echo(f"Contact sheet: {os.path.join(out, 'contact_sheet.png')}")
    if compare_run:
        click.echo(f"Side by side: {os.path.join(out, 'side_by_side.png')}")


@main.command("cam-profile")
@figure_options
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True))
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@click.option("--task", "tasks", multiple=True, required=True,
              help="Task head (repeatable), or 'all' for every head of each run.")
@click.option("--method", type=click.Choice(_CAM_METHODS), default="gradcam", show_default=True)
@click.option("--layer", help="CAM layer (default: each run's last convolutional block).")
@click.option("--split", type=click.Choice(["train", "val", "test"]),
              help="Only rows of this split (the first run's split.csv).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N rows (after --split).")
@click.option("--bins", default=20, show_default=True, type=click.IntRange(min=1),
              help="Distance rings from the centre (0) to the corners (1.41).")
@click.option("--name", "names", multiple=True,
              help="Legend name per run, in order (default: the run folder names).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--batch-size", default=16, show_default=True)
@_friendly_errors
def cam_profile_command(runs, manifest, tasks, method, layer, split, limit, bins, names, out,
                        batch_size):
    """Radial Grad-CAM profile: mean CAM response against normalised distance from the RoI
    centre over the rows of MANIFEST, for one or several RUNS on one figure (the paper's
    Supplementary Figure S1). Distance 1 is an edge's midpoint, 1.41 a corner.

    \b
    Writes radial_profile.csv (run, task, method, layer, r_lo, r_hi, r_mid, mean, sem,
    n_images) and radial_profile.png to --out.

    \b
    Example:
      usmtl cam-profile runs/single-alnm runs/multitask-hl data/manifest.csv \\
          --task alnm --split test --out runs/profile
    """
    _quiet_tensorflow()
    from usmtl.explain import profile_runs

    task_list = None if "all" in tasks else list(tasks)
    frame = profile_runs(list(runs), manifest, task_list, method=method, layer=layer,
                         split=split, limit=limit, bins=bins, out=out,
                         names=list(names) or None, batch_size=batch_size,
                         progress=sys.stderr.isatty())
    for (name, task), rows in frame.groupby(["run", "task"], sort=False):
        peak = rows.loc[rows["mean"].idxmax(), "r_mid"] if rows["mean"].notna().any() else float("nan")
        click.echo(f"{name}: {task}: peak response at distance {peak:.2f}, centre "
                   f"{rows['mean'].iloc[0]:.3f}, max {rows['mean'].max():.3f} "
                   f"({int(rows['n_images'].max())} images)")
    click.echo(f"Wrote {os.path.join(out, 'radial_profile.csv')} and "
               f"{os.path.join(out, 'radial_profile.png')}")


# ---------------------------------------------------------------------------------------
# Bench
# ---------------------------------------------------------------------------------------


@main.group("bench")
def bench_group():
    """Throughput benchmarks with peak memory: input pipeline, training step, prediction.
    Each prints a table and, with --out, writes JSON."""


def _bench_report(result, out):
    from usmtl.bench import format_result, write_json

    click.echo(format_result(result))
    write_json(result, out)
    if out:
        click.echo(f"Wrote {out}")


_bench_out_option = click.option("--out", type=click.Path(dir_okay=False), help="JSON file to write.")


@bench_group.command("pipeline")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False),
              help="Manifest CSV (default: synthetic phantoms in a temporary folder).")
@_config_option
@_set_option
@click.option("--limit", type=int, help="Only the first N images of the manifest.")
@click.option("--epochs", default=3, show_default=True, help="Cached epochs timed (median).")
@click.option("--batch-size", type=int, help="Default: the config's train.batch_size.")
@click.option("--cache", type=click.Choice(["auto", "memory", "disk"]),
              help="Override data.cache (a file cache goes in a temporary folder).")
@_bench_out_option
@_friendly_errors
def bench_pipeline_command(manifest, config_path, overrides, limit, epochs, batch_size, cache, out):
    """Images/s of a plain per-image Pillow loop against the tf.data pipeline: its first
    epoch (decode + RoI crop, filling the cache) and its cached epochs."""
    _quiet_tensorflow()
    from usmtl.bench import bench_pipeline

    _bench_report(bench_pipeline(manifest, config_path, overrides, limit, epochs, batch_size,
                                 cache), out)


@bench_group.command("train")
@click.option("--backend", type=click.Choice(["tensorflow", "jax"]),
              help="Keras backend (default: KERAS_BACKEND, else tensorflow). jax needs no TensorFlow.")
@_config_option
@_set_option
@click.option("--image-size", type=int, help="Default: the config's data.image_size.")
@click.option("--batch-size", type=int, help="Default: the config's train.batch_size.")
@click.option("--backbone", help="Default: the config's model.backbone.")
@click.option("--precision", default="auto", show_default=True,
              type=click.Choice(["auto", "float32", "mixed_float16", "mixed_bfloat16"]))
@click.option("--jit/--no-jit", default=None, help="XLA (default: train.jit_compile's auto rule; "
              "always on for JAX).")
@click.option("--steps-per-execution", default=1, show_default=True)
@click.option("--steps", default=50, show_default=True, help="Timed steps.")
@click.option("--warmup", default=5, show_default=True, help="Untimed steps first.")
@click.option("--augment/--no-augment", default=None, help="Default: the config's data.augment.enabled.")
@click.option("--data-on-device", is_flag=True,
              help="JAX: keep the batch on the accelerator and call the jitted step directly.")
@_bench_out_option
@_friendly_errors
def bench_train_command(backend, config_path, overrides, image_size, batch_size, backbone,
                        precision, jit, steps_per_execution, steps, warmup, augment,
                        data_on_device, out):
    """Training images/s of the project's model (losses, hinge, optimizer as 'usmtl fit'
    compiles them) on synthetic uint8 images; warm-up excluded."""
    _quiet_tensorflow()
    from usmtl.bench import bench_train

    _bench_report(bench_train(backend, config_path, overrides, image_size, batch_size, backbone,
                              precision, "auto" if jit is None else jit, steps_per_execution,
                              steps, warmup, augment, data_on_device), out)


@bench_group.command("predict")
@click.argument("models", nargs=-1, type=click.Path(exists=True))
@click.option("--savedmodel", type=click.Path(exists=True, file_okay=False),
              help="A SavedModel folder (serving_default signature, uint8 input).")
@click.option("--tflite", type=click.Path(exists=True, dir_okay=False), help="A .tflite file.")
@click.option("--batch-size", default=32, show_default=True)
@click.option("--batches", default=10, show_default=True, help="Batches per timed pass.")
@click.option("--runs", default=50, show_default=True, help="Timed single-image calls.")
@click.option("--image-size", type=int, help="Needed only for a SavedModel of any input size "
              "without usmtl's side files or a Keras MODEL.")
@_bench_out_option
@_trust_option
@_friendly_errors
def bench_predict_command(models, savedmodel, tflite, batch_size, batches, runs, image_size, out,
                          trust_model):
    """Batched images/s and single-image latency of each MODEL: a run's Keras model (run
    directory or .keras file) or any model usmtl opens (a SavedModel, a .tflite file, an export
    of any registered format; usmtl's side files optional), each timed as its format says."""
    _quiet_tensorflow()
    from usmtl.bench import bench_predict

    _bench_report(bench_predict(models[0] if models else None, savedmodel, tflite, batch_size,
                                batches, runs, image_size, models=models[1:],
                                trust_model=trust_model), out)


if __name__ == "__main__":
    main()
