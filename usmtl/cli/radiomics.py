"""``usmtl radiomics extract|fit|predict``: the radiomics baseline over
:mod:`usmtl.radiomics` (needs the 'radiomics' extra)."""

from __future__ import annotations

import os
import sys

import click

from usmtl.cli.errors import friendly_errors
from usmtl.cli.options import DEFAULT_CONFIG, WholeSentenceGroup, config_option, set_option


@click.group("radiomics", cls=WholeSentenceGroup)
def radiomics_group():
    """The radiomics baseline: PyRadiomics features, Boruta, random forest (needs the
    'radiomics' extra; see docs/radiomics.md)."""


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
@friendly_errors
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
@config_option
@set_option
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False),
              help="Default: the manifest the features were extracted from.")
@click.option("--seed", default=0, show_default=True)
@click.option("--boruta-iterations", default=100, show_default=True)
@click.option("--trees", default=500, show_default=True, help="Trees of each random forest.")
@click.option("--jobs", default=1, show_default=True)
@friendly_errors
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
@friendly_errors
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


COMMANDS = (radiomics_group,)
