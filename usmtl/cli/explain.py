"""Explanation commands: ``explain`` (Grad-CAM heatmaps, or the shortcut audit with
``--audit``) and ``cam-profile`` (the radial CAM profile), over :mod:`usmtl.explain`."""

from __future__ import annotations

import os
import sys

import click

from usmtl.cli import startup
from usmtl.cli.errors import friendly_errors
from usmtl.cli.options import figure_options


_CAM_METHODS = ("gradcam", "gradcam++")


@click.command("explain")
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
@friendly_errors
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
    startup.quiet_tensorflow()
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


@click.command("cam-profile")
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
@friendly_errors
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
    startup.quiet_tensorflow()
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


COMMANDS = (explain_command, cam_profile_command)
