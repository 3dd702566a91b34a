"""``usmtl export``: a run as a TF Serving SavedModel or a TFLite file, with its parity
check (:func:`usmtl.export.export`); ``--format`` lists the formats registered in
:mod:`usmtl.formats`. ``usmtl ensemble``: several models as one
(:func:`usmtl.formats.ensemble.write_ensemble`), which export takes like a run."""

from __future__ import annotations

import sys

import click

from usmtl.cli import startup
from usmtl.cli.errors import friendly_errors


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


@click.command("export")
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
@friendly_errors
def export_command(run, fmt, out, quantize, manifest, name, version, images, calibration_images,
                   tolerance, threads, latency_runs):
    """Export RUN (a run directory or .keras file) as a TF Serving SavedModel or a TFLite file,
    then check it against the Keras model: max |diff| per output, AUC change, size and CPU
    latency, in parity.json. Exits 1 when parity fails."""
    startup.quiet_tensorflow()
    from usmtl.export import export

    result = export(run, fmt, out, quantize=quantize, manifest=manifest, name=name,
                    version=version, images=images, calibration_images=calibration_images,
                    tolerance=tolerance, threads=threads, latency_runs=latency_runs,
                    log=click.echo)
    click.echo(f"Exported: {result.path}\nReport: {result.sidecar}/parity.json")
    if not result.passed:
        sys.exit(1)




@click.command("ensemble")
@click.argument("out", type=click.Path(file_okay=False))
@click.argument("models", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--rule", type=click.Choice(["mean", "logit"]), default="mean", show_default=True,
              help="mean: the mean probability; logit: the sigmoid of the mean logit.")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True,
              help="flip: every member also sees the mirrored crop.")
@friendly_errors
def ensemble_command(out, models, rule, tta):
    """Make an ensemble of several models (runs, .keras files, exports; an experiment folder
    stands for all its runs): a folder that predict, bench and export open like one model."""
    startup.quiet_tensorflow()
    from usmtl.formats import open_model
    from usmtl.formats.ensemble import write_ensemble

    opened = open_model(write_ensemble(out, models, rule, tta))
    click.echo(f"Ensemble of {len(opened.model.members)} models ({rule} of probabilities"
               f"{', with the mirrored crop' if tta == 'flip' else ''}): {out}")


COMMANDS = (export_command, ensemble_command)
