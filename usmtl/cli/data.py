"""Data commands: ``demo-data``, ``check``, ``presets``, ``import busbra|busi|labelimg`` and
``pack``. Each parses its arguments and calls the data layer (:mod:`usmtl.data`)."""

from __future__ import annotations

import os
import sys

import click

from usmtl.cli.errors import friendly_errors
from usmtl.cli.options import PAPER_CONFIG, WholeSentenceGroup, set_option


@click.command("demo-data")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--patients", default=200, show_default=True, help="Number of synthetic patients.")
@click.option("--size", default=160, show_default=True, help="Approximate image side in pixels.")
@click.option("--seed", default=0, show_default=True)
@friendly_errors
def demo_data(out, patients, size, seed):
    """Write synthetic ultrasound phantoms with every label, boxes and a manifest to OUT."""
    from usmtl.data.phantoms import make_phantoms

    frame = make_phantoms(out, n_patients=patients, size=size, seed=seed,
                          progress=sys.stderr.isatty())
    click.echo(f"Wrote {len(frame)} images of {frame['patient_id'].nunique()} patients: "
               f"{os.path.join(out, 'manifest.csv')}")


@click.command("check")
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
@friendly_errors
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
        from usmtl.data.duplicate_check import check_duplicates

        check_duplicates(manifest, split_file, max_distance, duplicates_out, grouped_out,
                         progress=sys.stderr.isatty(), say=lambda text: click.echo(text, err=True))
    for problem in problems:
        click.echo(problem)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {manifest}", err=True)
        sys.exit(1)
    click.echo(f"{manifest}: no problems found")


@click.command("presets")
@click.argument("name", required=False)
@friendly_errors
def presets_command(name):
    """List the configs shipped with usmtl (pass a name to --config); with NAME, print
    that preset's YAML."""
    from usmtl.presets import preset_listing, yaml_text

    click.echo(yaml_text(name).rstrip("\n") if name else preset_listing())


@click.group("import", cls=WholeSentenceGroup)
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
@friendly_errors
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
@friendly_errors
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
@friendly_errors
def import_labelimg(images, labels, annotations, out, group_duplicates, max_distance,
                    no_duplicates):
    """A folder of images with LabelImg (Pascal VOC) boxes and a label table."""
    from usmtl.data.importers import import_labelimg as run

    _run_import(run, images, labels, out, annotations_dir=annotations,
                no_duplicates=no_duplicates, group_duplicates=group_duplicates,
                max_distance=max_distance)


@click.command("pack")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="The pack file to write (by convention NAME.pack).")
@click.option("--size", "image_size", type=click.IntRange(8, 4096),
              help="Crop side in pixels (default: the config's data.image_size).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Take data.image_size, roi_margin, square_roi and inpaint_marks from this "
                   "experiment YAML or preset (default: paper, 256 px, margin 0.1, square); "
                   "--size overrides its size.")
@set_option
@click.option("--split-file", type=click.Path(exists=True),
              help="Store this split as the split column (a split.csv or a run directory).")
@click.option("--codec", type=click.Choice(["auto", "png", "webp", "jpeg"]), default="auto",
              show_default=True, help="auto: lossless WebP (see usmtl.data.pack).")
@click.option("--quality", type=click.IntRange(1, 100),
              help="Lossy quality for webp or jpeg (webp without it: lossless; jpeg: 95).")
@click.option("--workers", type=click.IntRange(1, 64), help="Cropping threads (default: cores, max 8).")
@friendly_errors
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


COMMANDS = (demo_data, check, presets_command, import_group, pack_command)
