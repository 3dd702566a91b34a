"""Training commands: ``fit``, ``experiment`` (the paper's protocol), ``tune`` and
``ablation``. Each parses its arguments and calls one plain function (:mod:`usmtl.training`,
:mod:`usmtl.experiment`, :mod:`usmtl.ablation`); TensorFlow is imported inside the command."""

from __future__ import annotations

import os

import click

from usmtl.cli import startup
from usmtl.cli.errors import friendly_errors
from usmtl.cli.options import DEFAULT_CONFIG, backend_option, config_option, set_option


def _speed_options(command):
    """--strategy and --jit/--no-jit: shortcuts for --set train.strategy / train.jit_compile."""
    command = click.option(
        "--jit/--no-jit", "jit", default=None,
        help="XLA-compile the training step (default: train.jit_compile, auto = on with one GPU).")(command)
    return click.option(
        "--strategy", type=click.Choice(["auto", "default", "mirrored", "multiworker"]),
        help="tf.distribute strategy (default: train.strategy). multiworker reads TF_CONFIG; "
             "see docs/training.md's multi-worker recipe.")(command)


def _with_speed_overrides(overrides, strategy, jit) -> list:
    extra = [] if strategy is None else [f"train.strategy={strategy}"]
    extra += [] if jit is None else [f"train.jit_compile={str(jit).lower()}"]
    return list(overrides) + extra


@click.command("fit")
@config_option
@set_option
@click.option("--variant", help="single-bm, single-alnm, multitask, multitask-hl or single:<task>.")
@click.option("--manifest", type=click.Path(dir_okay=False), help="Manifest CSV.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory.")
@click.option("--split-file", type=click.Path(), help="Reuse a split (split.csv or a run directory).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run in --out.")
@_speed_options
@friendly_errors
@backend_option
def fit_command(config_path, overrides, variant, manifest, out, split_file, resume, strategy, jit):
    """Train a model and write a run directory."""
    overrides = _with_speed_overrides(overrides, strategy, jit)
    startup.quiet_tensorflow()
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


@click.command("experiment")
@config_option
@set_option
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
@friendly_errors
@backend_option
def experiment_command(config_path, overrides, manifest, out, repeats, protocol, variants,
                       thresholds, burden_column, radiomics_features, paper, interval, split_file,
                       folds, cv, tta, ensemble_rule, strategy, jit):
    """The paper's protocol on one fixed test split, every run repeated; writes table3.md/.csv
    (the paper's Table 3), tables.md, summary.csv, pvalues.csv; with --radiomics table2.md;
    with --protocol burden table4.md/.csv. Re-running resumes."""
    startup.quiet_tensorflow()
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


@click.command("tune")
@config_option
@set_option
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
@friendly_errors
@backend_option
def tune_command(config_path, overrides, manifest, out, margins, weights, child_weights, select,
                 split_file):
    """Grid search on the validation split: hinge margin m, weight lambda and, with
    --child-weights, the children's loss weight."""
    startup.quiet_tensorflow()
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


@click.command("ablation")
@click.option("--arm", "arms", multiple=True, required=True, metavar="LABEL=EXPERIMENT:VARIANT",
              help="An arm: one variant of an experiment directory (repeatable; the first is "
                   "the reference).")
@click.option("--task", required=True, help="The task compared, e.g. malignancy.")
@click.option("--reference", help="The reference arm's label (default: the first).")
@click.option("--select", "selects", multiple=True, metavar="LABEL=ARM,ARM,...",
              help="An arm chosen per repeat, among these arms, on the task's validation AUC.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the table (.md; a .csv beside).")
@friendly_errors
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


COMMANDS = (fit_command, experiment_command, tune_command, ablation_command)
