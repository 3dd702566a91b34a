"""Scoring commands: ``predict``, ``evaluate``, ``calibrate``, ``validate`` (external
validation), ``report`` (the model card) and ``compare``. Each parses its arguments and calls
one plain function (:mod:`usmtl.predict`, :mod:`usmtl.evaluation`, :mod:`usmtl.model_card`);
TensorFlow is imported inside the command."""

from __future__ import annotations

import os

import click

from usmtl.cli import startup
from usmtl.cli.errors import friendly_errors
from usmtl.cli.options import backend_option, figure_options, trust_option
from usmtl.evaluation.cells import cell


@click.command("predict")
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
@trust_option
@friendly_errors
@backend_option
def predict_command(model, input, box, split, out, batch_size, uncalibrated, tta, trust_model):
    """Per-task probabilities for an image (with --box) or a manifest, from a run directory,
    a saved .keras model, or an export of 'usmtl export' (a SavedModel folder or a .tflite
    file); flags rows where a child exceeds its parent. A calibrated model's p_<task> is
    calibrated (raw_<task>: the head's own score), and the output says so."""
    from usmtl.outputs import require_output_file

    if out:
        require_output_file(out, inputs=[model, input])  # before the work
    startup.quiet_tensorflow()
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


@click.command("evaluate")
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
              help="Patient resamples for the 95% CIs and the ROC band (0: none).")
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
@friendly_errors
def evaluate_command(source, manifest, split, threshold, patient_how, n_boot, edges, cohorts,
                     val_predictions, out, skip_unlabelled, by):
    """Metrics with patient-bootstrap CIs, ROC curves, calibration, operating points, decision
    curves and inconsistency rates for a run directory or a prediction CSV (subgroups with
    --by); writes metrics.json, CSV tables, figures and report.md."""
    startup.quiet_tensorflow()
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


@click.command("calibrate")
@figure_options
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--method", type=click.Choice(["platt", "temperature"]), default="platt",
              show_default=True, help="platt: sigmoid(a*logit(p)+b); temperature: sigmoid(logit(p)/T).")
@click.option("--remove", is_flag=True, help="Delete the run's calibration (raw scores again).")
@friendly_errors
def calibrate_command(run, method, remove):
    """Fit a recalibration of each head on RUN's validation split and store it in the run
    (calibration.json); predict, evaluate, validate and export then apply or carry it.
    Prints Brier, ECE, calibration intercept and slope before -> after."""
    startup.quiet_tensorflow()
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


@click.command("validate")
@figure_options
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.argument("external", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Report folder.")
@click.option("--threshold", default=0.5, show_default=True)
@click.option("--bootstrap", "n_boot", default=1000, show_default=True,
              help="Patient-bootstrap resamples of every CI and ROC band (0: none).")
@click.option("--skip-unlabelled", is_flag=True,
              help="Compare only the tasks the external set has labels for.")
@friendly_errors
def validate_command(run, external, out, threshold, n_boot, skip_unlabelled):
    """External validation: score RUN on its internal test split and on the EXTERNAL
    manifest (every row), with the calibration and thresholds of its internal validation;
    writes a side-by-side report (validation.md) with the change in each figure."""
    startup.quiet_tensorflow()
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


@click.command("report")
@figure_options
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), help="The card (default RUN/model_card.md).")
@click.option("--by", multiple=True, help="Manifest column for subgroups (repeatable), e.g. device.")
@click.option("--validation", type=click.Path(exists=True, file_okay=False),
              help="The folder of a 'usmtl validate' report to include.")
@click.option("--audit", is_flag=True, help="Run the shortcut audit (Grad-CAM over the test split).")
@click.option("--bootstrap", "n_boot", default=1000, show_default=True,
              help="Patient-bootstrap resamples of every CI.")
@friendly_errors
def report_command(run, out, by, validation, audit, n_boot):
    """A model card for RUN: intended use, model, data and split, performance with CIs,
    calibration, decision curves and operating points, subgroups, external validation, the
    shortcut audit and limitations, in one Markdown file."""
    startup.quiet_tensorflow()
    from usmtl.model_card import write_model_card

    card = write_model_card(run, out, by=by, validation=validation, audit=audit, n_boot=n_boot)
    click.echo(card["toc"])
    click.echo(f"Wrote {card['path']}")


@click.command("compare")
@click.argument("a", type=click.Path(exists=True))
@click.argument("b", type=click.Path(exists=True))
@click.option("--threshold", default=0.5, show_default=True)
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["train", "val", "test"]), help="Split used for run directories.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the comparison as JSON.")
@click.option("--skip-unlabelled", is_flag=True,
              help="Compare only the shared tasks with labels (default: an unlabelled one is an error).")
@friendly_errors
def compare_command(a, b, threshold, split, out, skip_unlabelled):
    """Paired DeLong (AUC) and McNemar (accuracy) tests between two runs or prediction CSVs."""
    startup.quiet_tensorflow()
    from usmtl.evaluation.compare import compare, format_comparison
    from usmtl.run import write_json_atomic

    result = compare(a, b, threshold, split, skip_unlabelled=skip_unlabelled)
    click.echo(format_comparison(result, ("A", "B")))
    click.echo(f"A = {a}\nB = {b}")
    if out:
        write_json_atomic(out, result)


COMMANDS = (predict_command, evaluate_command, calibrate_command, validate_command, report_command,
            compare_command)
