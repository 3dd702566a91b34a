"""``usmtl experiment`` and ``usmtl tune``: the paper's protocol in one command each.

``run_experiment`` trains the four variants of Li, Guo et al. (2022) (Single-BM, Single-ALNM,
Multi-Task, Multi-Task + HL, each with the config's heads: two in ``configs/paper.yaml``)
``repeats`` times with different seeds on one fixed, saved patient-level test split, then
aggregates the paper's Tables 2-3: mean ± SD with the paper's interval mean ± t(0.975, n-1)·SD
(the CI of the mean, mean ± t·SD/sqrt(n), is kept beside it), p-values between variants
(Student's unpaired t-test over repeats, the paper's; a paired t-test; DeLong on predictions
averaged over repeats) and inconsistency rates with and without the hinge. Every task is
scored within its cohort (ALNM within the malignant masses) and the tables say so, with n.
Re-running resumes: finished runs are reused, an interrupted one continues from its last epoch.

``run_burden`` is the paper's Table 4: nodal burden as separate binary tasks, one model per
threshold k (the child's label replaced by ``aln_count >= k``, still within the malignant
masses), each trained as above on the same split, optionally beside the radiomics baseline
fitted per threshold on the same split.

``tune`` grid-searches the hinge margin m and weight lambda on the validation split, as the
paper chose m = 0.1 and lambda = 0.05.

Layout of an experiment directory::

    experiment.yaml  split.csv  runs/<variant>/repeat-<k>/ (run directories)
    results.csv (one row per run, task and metric)  summary.csv  pvalues.csv
    inconsistency.csv  tables.md  table3.md  table3.csv
    radiomics/ table2.md table2.csv   (with a radiomics features file)

and of a burden experiment: ``experiment.yaml  split.csv  ge<k>/`` (one experiment directory
per threshold, sharing the split) ``radiomics/ge<k>/`` (with ``--radiomics``), ``burden.csv``
and ``table4.md``/``table4.csv``. ``table2/3/4`` are laid out as the paper's tables
(:mod:`usmtl.evaluation.paper_tables`), with the paper's figures beside ours on request.
"""

from __future__ import annotations

import copy
import itertools
import math
import os

import numpy as np
import pandas as pd

from usmtl.config import (VARIANTS, ExperimentConfig, apply_variant, config_from_dict,
                          config_to_dict, save_config)
from usmtl.data.splits import SPLIT_FILE, save_split
from usmtl.errors import UsmtlError
from usmtl.evaluation.cells import cell
from usmtl.evaluation import stats
from usmtl.evaluation.metrics import METRICS, binary_metrics
from usmtl.evaluation.scope import hierarchy_on_one_scale
from usmtl.run import write_csv_atomic, write_json_atomic, write_text_atomic
from usmtl.tasks import TaskGraph, display_edge, display_name, display_names

EXPERIMENT_CONFIG = "experiment.yaml"


def check_saved_config(cfg: ExperimentConfig, out_dir: str) -> bool:
    """Whether ``out_dir`` holds an experiment's saved config; an error when it is another
    (compared through the dataclasses: keys added since, at their defaults, are no change)."""
    import yaml

    config_path = os.path.join(out_dir, EXPERIMENT_CONFIG)
    if not os.path.isfile(config_path):
        return False
    with open(config_path) as f:
        saved = yaml.safe_load(f)
    try:
        saved = config_to_dict(config_from_dict(saved))
    except UsmtlError:
        pass
    if saved != config_to_dict(cfg):
        raise UsmtlError(f"{out_dir} holds an experiment with another config; use a new --out "
                         f"or the same config. Received: a config that differs from "
                         f"{config_path}")
    return True


def _prepare_directory(cfg: ExperimentConfig, manifest: str, out_dir: str,
                       split_file: str | None) -> str:
    """Save the config and the one split of the experiment (or check the saved ones)."""
    from usmtl.data.prepare import prepare_data
    from usmtl.data.splits import load_split

    split_path = os.path.join(out_dir, SPLIT_FILE)
    if check_saved_config(cfg, out_dir):
        prepare_data(cfg, manifest, split_path)  # the manifest must still fit the split
        return split_path
    data = prepare_data(cfg, manifest, split_file)
    os.makedirs(out_dir, exist_ok=True)
    save_split(load_split(split_file) if split_file else data.split, split_path)
    save_config(cfg, os.path.join(out_dir, EXPERIMENT_CONFIG))
    return split_path


def _run_metrics(frame: pd.DataFrame, graph: TaskGraph) -> list[dict]:
    """Per task (within its cohort: the prediction file's labels are restricted to it) and
    metric one row, with the cohort and its n; then the inconsistency rates per edge."""
    rows = []
    for task in graph.names:
        m = binary_metrics(frame[f"y_{task}"], frame[f"p_{task}"])
        cohort = {"cohort": graph.cohort_text(task), "n_images": m["n"], "positives": m["positives"]}
        rows += [{"task": task, "metric": k, "value": m[k], **cohort} for k in METRICS]
    for edge, r in hierarchy_on_one_scale(frame, graph.edges)[0].items():
        rows += [{"task": edge, "metric": f"inconsistency_{kind}", "value": r[kind],
                  "cohort": "all", "n_images": r["n"], "positives": math.nan}
                 for kind in ("hard", "soft")]
    return rows


def run_experiment(cfg: ExperimentConfig, manifest: str, out_dir: str, repeats: int = 5,
                   variants=VARIANTS, split_file: str | None = None, verbose=0,
                   interval: str = "paper", paper: bool = False,
                   radiomics: str | None = None) -> dict:
    """Train every variant ``repeats`` times on one split; write and return the tables.

    Args:
        cfg: the experiment's config; its variants are derived with
            :func:`~usmtl.config.apply_variant`.
        manifest: the manifest CSV.
        out_dir: the experiment directory (re-running it resumes).
        repeats: runs per variant, seeds ``train.seed`` to ``train.seed + repeats - 1``.
        variants: variant names.
        split_file: reuse this split instead of making one.
        interval: the interval in ``tables.md``: ``paper`` (mean ± t·SD, as Li et al.) or
            ``mean`` (the CI of the mean); summary.csv holds both.
        paper: ``table3.md`` (and ``table2.md``) show the paper's figure beside each cell.
        radiomics: a features CSV of ``usmtl radiomics extract``: the radiomics baseline is
            fitted on the same split and ``table2.md/.csv`` (CNN against radiomics) written.

    Returns:
        ``{"results", "summary", "pvalues", "markdown", "table3"}`` (and ``"table2"``).

    Raises:
        UsmtlError: repeats < 1, an unknown variant or interval, another config in ``out_dir``.

    Example:
        >>> from usmtl.config import load_config
        >>> from usmtl.experiment import run_experiment
        >>> result = run_experiment(load_config("configs/paper.yaml"), "manifest.csv", "exp",
        ...                         repeats=5)  # doctest: +SKIP
        >>> print(result["markdown"])  # doctest: +SKIP
    """
    from usmtl.evaluation.run_scores import run_predictions
    from usmtl.training.fit import fit_or_resume

    if repeats < 1:
        raise UsmtlError(f"repeats must be >= 1. Received: {repeats}")
    if interval not in stats.REPEAT_INTERVALS:
        raise UsmtlError(f"interval must be one of {list(stats.REPEAT_INTERVALS)}. Received: {interval!r}")
    for v in variants:
        apply_variant(cfg, v)  # unknown variants fail before any training
    if radiomics and TABLE2_CNN not in variants:
        raise UsmtlError(f"Table 2 compares {TABLE2_CNN} with radiomics; add it to --variants. "
                         f"Received variants: {list(variants)}")
    split_path = _prepare_directory(cfg, manifest, out_dir, split_file)
    rows, predictions = [], {}
    plan = [(v, k) for v in variants for k in range(1, repeats + 1)]
    for i, (variant, k) in enumerate(plan, start=1):
        run_cfg = apply_variant(cfg, variant)
        run_cfg.train.seed = cfg.train.seed + k - 1
        run_dir = os.path.join(out_dir, "runs", variant, f"repeat-{k}")
        result, what = fit_or_resume(run_cfg, manifest, run_dir, split_path, verbose=verbose)
        frame = run_predictions(run_dir, None, "test")
        predictions[(variant, k)] = frame
        graph = TaskGraph.from_config(run_cfg.tasks)
        rows += [{"variant": variant, "repeat": k, **r} for r in _run_metrics(frame, graph)]
        print(f"[{i}/{len(plan)}] {variant} repeat {k}: {what} ({result.seconds:.0f} s)", flush=True)
    out = _write_tables(out_dir, pd.DataFrame(rows), predictions, repeats, cfg, interval, paper)
    if radiomics:
        out["table2"] = _write_table2(out_dir, cfg, radiomics, split_path, out["summary"],
                                      predictions, repeats, interval, paper)
    return out


def _roles(cfg: ExperimentConfig) -> dict:
    """Our task -> the paper's: the root is its malignancy, the root's first child ALNM."""
    from usmtl.evaluation.paper_tables import paper_role

    graph = TaskGraph.from_config(cfg.tasks)
    children = graph.children(graph.roots[0])
    return paper_role(graph.names, graph.roots, children[0] if children else None)


def _write_paper_table(out_dir: str, name: str, text: str, frame: pd.DataFrame) -> None:
    write_text_atomic(os.path.join(out_dir, f"{name}.md"), text)
    write_csv_atomic(os.path.join(out_dir, f"{name}.csv"), frame)


def _write_tables(out_dir: str, results: pd.DataFrame, predictions: dict, repeats: int,
                  cfg: ExperimentConfig, interval: str, paper: bool = False) -> dict:
    """results.csv, summary.csv, pvalues.csv, inconsistency.csv, tables.md and the paper's
    Table 3 shape (table3.md, table3.csv)."""
    from usmtl.evaluation.paper_tables import table3

    write_csv_atomic(os.path.join(out_dir, "results.csv"), results)
    summary = summarize(results)
    write_csv_atomic(os.path.join(out_dir, "summary.csv"), summary)
    pvalues = variant_pvalues(results, predictions)
    write_csv_atomic(os.path.join(out_dir, "pvalues.csv"), pvalues)
    inconsistency = summary[summary["metric"].str.startswith("inconsistency_")]
    write_csv_atomic(os.path.join(out_dir, "inconsistency.csv"), inconsistency)
    text = tables_markdown(summary, pvalues, repeats, cfg, interval)
    write_text_atomic(os.path.join(out_dir, "tables.md"), text)
    t3, frame = table3(summary, TaskGraph.from_config(cfg.tasks).names, _roles(cfg), repeats,
                       interval, paper=paper, names=display_names(cfg.tasks))
    _write_paper_table(out_dir, "table3", t3, frame)
    return {"results": results, "summary": summary, "pvalues": pvalues, "markdown": text,
            "table3": t3}


TABLE2_CNN = "multitask-hl"  # the paper's Table 2 sets its Multi-Task + HL against radiomics


def _write_table2(out_dir: str, cfg: ExperimentConfig, features: str, split_path: str,
                  summary: pd.DataFrame, predictions: dict, repeats: int, interval: str,
                  paper: bool, cnn_variant: str = TABLE2_CNN) -> str:
    """Fit (or reuse) radiomics on the experiment's split; table2.md/.csv: the CNN against
    it, with DeLong's p on the same test images."""
    from usmtl.evaluation.paper_tables import table2

    graph = TaskGraph.from_config(cfg.tasks)
    rows, frame = _radiomics_rows(features, os.path.join(out_dir, "radiomics"), cfg, split_path,
                                  graph.names)
    delong = {}
    for task in graph.names:
        cnn = pooled_predictions(predictions, cnn_variant, task)
        if cnn is None or frame is None or f"p_{task}" not in frame:
            continue
        rad = frame.set_index("image").reindex(cnn.index)
        if rad[f"p_{task}"].isna().any():
            raise UsmtlError(f"The radiomics test predictions miss some of the CNN's test images "
                             f"for {task!r}. Received: {int(rad[f'p_{task}'].isna().sum())} missing")
        delong[task] = stats.delong_test(cnn["y"].to_numpy(float), cnn["p"].to_numpy(float),
                                         rad[f"p_{task}"].to_numpy(float))["p"]
    text, table = table2(summary, pd.DataFrame(rows), delong, graph.names, _roles(cfg), repeats,
                         interval, paper=paper, cnn_variant=cnn_variant,
                         names=display_names(cfg.tasks))
    _write_paper_table(out_dir, "table2", text, table)
    return text


SUMMARY_COLUMNS = ["variant", "task", "metric", "n", "mean", "sd", "ci_low", "ci_high",
                   "mean_ci_low", "mean_ci_high", "cohort", "n_images", "positives"]


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per variant, task and metric over repeats: n (repeats), mean, SD, the paper's interval
    mean ± t(0.975, n-1)·SD as ``ci_low, ci_high`` and the CI of the mean as
    ``mean_ci_low, mean_ci_high`` (both clipped to [0, 1]); then the task's cohort and its
    test images (``n_images``, ``positives``: the same in every repeat, the split is fixed)."""
    rows = []
    for (variant, task, metric), group in results.groupby(["variant", "task", "metric"], sort=False):
        summary = stats.summarize_repeats(group["value"].to_numpy(float), bounds=(0.0, 1.0))
        first = group.iloc[0]
        rows.append({"variant": variant, "task": task, "metric": metric, **summary,
                     "cohort": first.get("cohort", "as labelled"),
                     "n_images": first.get("n_images", math.nan),
                     "positives": first.get("positives", math.nan)})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def pooled_predictions(predictions: dict, variant: str, task: str):
    """Labels and repeat-averaged scores of one variant, in a fixed image order."""
    frames = [f.set_index("image") for (v, _), f in sorted(predictions.items()) if v == variant]
    if not frames or f"p_{task}" not in frames[0]:
        return None
    scores = np.mean([f[f"p_{task}"].to_numpy(float) for f in frames], axis=0)
    return pd.DataFrame({"y": frames[0][f"y_{task}"], "p": scores}, index=frames[0].index)


def variant_pvalues(results: pd.DataFrame, predictions: dict) -> pd.DataFrame:
    """Per task and pair of variants, on AUC: Student's unpaired t-test over repeats (the
    paper's test, ``unpaired_t_p``), the paired t-test over repeats (same seeds and split:
    ``paired_t_p``), and DeLong on pooled (repeat-averaged) predictions (``delong_p``)."""
    rows = []
    aucs = results[results["metric"] == "auc"]
    for task in aucs["task"].unique():
        by_variant = {v: g.sort_values("repeat")["value"].to_numpy(float)
                      for v, g in aucs[aucs["task"] == task].groupby("variant", sort=False)}
        for a, b in itertools.combinations(by_variant, 2):
            t = stats.paired_repeats_test(by_variant[a], by_variant[b])
            unpaired = stats.unpaired_repeats_test(by_variant[a], by_variant[b])
            pa, pb = pooled_predictions(predictions, a, task), pooled_predictions(predictions, b, task)
            d = stats.delong_test(pa["y"].to_numpy(float), pa["p"].to_numpy(float),
                                  pb.loc[pa.index, "p"].to_numpy(float))
            rows.append({"task": task, "variant_a": a, "variant_b": b,
                         "auc_diff_mean": unpaired["diff"], "unpaired_t_p": unpaired["p"],
                         "paired_t_p": t["p"],
                         "pooled_auc_a": d["auc_a"], "pooled_auc_b": d["auc_b"], "delong_p": d["p"]})
    return pd.DataFrame(rows)


INTERVAL_TEXT = {"paper": "mean ± SD (mean ± t·SD, as Li et al.)",
                 "mean": "mean ± SD (95% CI of the mean, mean ± t·SD/√n)"}


def _cell(summary: pd.DataFrame, variant: str, task: str, metric: str, interval: str = "paper") -> str:
    row = summary[(summary["variant"] == variant) & (summary["task"] == task) &
                  (summary["metric"] == metric)]
    if row.empty:
        return "-"
    values = row.iloc[0].to_dict()
    if interval == "mean":
        values.update(ci_low=values["mean_ci_low"], ci_high=values["mean_ci_high"])
    return stats.format_mean_sd_ci(values)


def _cohort_line(summary: pd.DataFrame, task: str) -> str:
    """``Cohort: malignant = 1; n = 184 test images (58 positive).``"""
    rows = summary[(summary["task"] == task) & (summary["metric"] == "auc")]
    if rows.empty:
        return ""
    row = rows.iloc[0]
    n, pos = row.get("n_images", math.nan), row.get("positives", math.nan)
    counts = "" if pd.isna(n) else f"; n = {int(n)} test images" + \
        ("" if pd.isna(pos) else f" ({int(pos)} positive)")
    return f"Cohort: {row.get('cohort', 'as labelled')}{counts}."


def tables_markdown(summary: pd.DataFrame, pvalues: pd.DataFrame, repeats: int,
                    cfg: ExperimentConfig, interval: str = "paper") -> str:
    """The paper's Tables 2-3 shape: one table per task (headed by its display name), a row
    per variant, each cell mean ± SD (interval), with the task's cohort and n."""
    names = display_names(cfg.tasks)
    parts = [f"# Experiment: {cfg.name}", "",
             f"Test split fixed once; {repeats} repeat(s) per variant with different seeds. "
             f"Cells: {INTERVAL_TEXT[interval]}, 95%, over repeats; image level, threshold 0.5; "
             f"intervals clipped to [0, 1]. Each task is scored within its cohort.", ""]
    for task in TaskGraph.from_config(cfg.tasks).names:
        variants = summary.loc[summary["task"] == task, "variant"].unique()
        parts += [f"## {display_name(task, names)}", "", _cohort_line(summary, task), "",
                  "| model | " + " | ".join(METRICS) + " |", "|---|" + "---|" * len(METRICS)]
        for v in variants:
            parts.append(f"| {v} | " + " | ".join(_cell(summary, v, task, m, interval)
                                                 for m in METRICS) + " |")
        parts.append("")
    inc = summary[summary["metric"].str.startswith("inconsistency_")]
    if not inc.empty:
        parts += ["## Inconsistent predictions (share of test images)", "",
                  "Hard: child >= 0.5 while parent < 0.5. Soft: child score above parent score.", "",
                  "| model | edge | hard | soft |", "|---|---|---|---|"]
        for (v, edge), _ in inc.groupby(["variant", "task"], sort=False):
            parts.append(f"| {v} | {display_edge(edge, names)} | "
                         f"{_cell(summary, v, edge, 'inconsistency_hard', interval)} | "
                         f"{_cell(summary, v, edge, 'inconsistency_soft', interval)} |")
        parts.append("")
    if not pvalues.empty:
        parts += ["## p-values between models (AUC)", "",
                  "Student's unpaired t-test over repeats is the paper's test; the paired t-test "
                  "pairs repeats by seed; DeLong compares the repeat-averaged predictions.", "",
                  "| task | A | B | mean AUC diff | unpaired t p | paired t p | DeLong p (pooled) |",
                  "|---|---|---|---|---|---|---|"]
        for r in pvalues.itertuples():
            parts.append(f"| {display_name(r.task, names)} | {r.variant_a} | {r.variant_b} | "
                         f"{cell(r.auc_diff_mean, '+.3f')} | {cell(r.unpaired_t_p, '.3g')} | "
                         f"{cell(r.paired_t_p, '.3g')} | {cell(r.delong_p, '.3g')} |")
        parts.append("")
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------
# The paper's Table 4: nodal burden as separate binary tasks
# ---------------------------------------------------------------------------------------

BURDEN_THRESHOLDS = (1, 2, 3, 4)
BURDEN_VARIANTS = ("multitask-hl",)


def burden_config(cfg: ExperimentConfig, threshold: int, column: str = "aln_count") -> ExperimentConfig:
    """The paper's two-head model with the child's label replaced by ``column >= threshold``
    (Li, Guo et al. 2022, Table 4: "positive samples were images from patients with ALNM
    number no less than a given number"). The child keeps its cohort (the malignant masses)
    and is renamed ``<child>_ge<threshold>``.

    Raises:
        UsmtlError: the config is not a root with exactly one child, or threshold < 1.

    Example:
        >>> from usmtl.config import TaskConfig, config_from_dict
        >>> cfg = config_from_dict({"tasks": [
        ...     {"name": "malignancy", "label": "malignant"},
        ...     {"name": "alnm", "label": "alnm", "parent": "malignancy",
        ...      "cohort": "parent_positive"}]})
        >>> task = burden_config(cfg, 3).tasks[1]
        >>> task.name, task.label, task.cohort
        ('alnm_ge3', 'aln_count >= 3', 'parent_positive')
    """
    graph = TaskGraph.from_config(cfg.tasks)
    if len(graph.tasks) != 2 or len(graph.edges) != 1:
        raise UsmtlError("The burden protocol trains the paper's two-head model (a root task and "
                         "one child, as configs/paper.yaml); chained burden heads are "
                         f"configs/paper_chained.yaml. Received tasks: {graph.names}")
    if int(threshold) != threshold or threshold < 1:
        raise UsmtlError(f"Burden thresholds are integers >= 1. Received: {threshold!r}")
    parent, child = graph.edges[0]
    cfg = copy.deepcopy(cfg)
    task = next(t for t in cfg.tasks if t.name == child)
    task.name, task.label = f"{child}_ge{int(threshold)}", f"{column} >= {int(threshold)}"
    cfg.name = f"{cfg.name}-ge{int(threshold)}"
    return cfg.validate()


def _radiomics_rows(features: str, out_dir: str, cfg: ExperimentConfig, split_path: str,
                    tasks: list[str]) -> tuple[list[dict], pd.DataFrame | None]:
    """Fit (or reuse) the radiomics baseline of one config on the split; its test metrics
    (rows shaped as summary.csv's) per task, and its test predictions."""
    from usmtl.radiomics.model import fit_radiomics
    from usmtl.run import Run

    if Run(out_dir).status != "finished":
        if os.path.isdir(out_dir):
            import shutil

            shutil.rmtree(out_dir)  # an interrupted fit: nothing of it is reusable
        fit_radiomics(features, out_dir, cfg=cfg, split_file=split_path)
    frame = pd.read_csv(os.path.join(out_dir, "test_predictions.csv"))
    graph = TaskGraph.from_config(cfg.tasks)
    rows = []
    for task in tasks:
        if f"p_{task}" not in frame:
            continue
        m = binary_metrics(frame[f"y_{task}"], frame[f"p_{task}"])
        rows += [{"variant": "radiomics", "task": task, "metric": k, "n": 1, "mean": m[k],
                  "sd": math.nan, "ci_low": math.nan, "ci_high": math.nan,
                  "mean_ci_low": math.nan, "mean_ci_high": math.nan,
                  "cohort": graph.cohort_text(task), "n_images": m["n"],
                  "positives": m["positives"]} for k in METRICS]
    return rows, frame


def run_burden(cfg: ExperimentConfig, manifest: str, out_dir: str, repeats: int = 5,
               thresholds=BURDEN_THRESHOLDS, column: str = "aln_count", variants=BURDEN_VARIANTS,
               split_file: str | None = None, radiomics: str | None = None, verbose=0,
               interval: str = "paper", paper: bool = False) -> dict:
    """The paper's Table 4: one experiment per burden threshold on one shared split.

    Args:
        cfg: the paper's two-head config (``configs/paper.yaml``).
        manifest: the manifest; ``column`` must hold the number of metastatic nodes.
        out_dir: the burden directory (re-running it resumes, like :func:`run_experiment`).
        repeats: runs per variant and threshold.
        thresholds: the k of ``column >= k``.
        variants: variants per threshold (default: the paper's Multi-Task + HL).
        radiomics: a features CSV of ``usmtl radiomics extract``: the radiomics baseline is
            fitted per threshold on the same split and added as a row, as in the paper.
        interval: ``paper`` or ``mean``, as in :func:`run_experiment`.
        paper: show the paper's Table 4 figure (Table 2's ALNM for k = 1) beside each cell.

    Returns:
        ``{"burden": DataFrame, "markdown": str}``; writes burden.csv and table4.md/.csv.

    Raises:
        UsmtlError: a config that is not two-headed, a bad threshold, another config in
            ``out_dir``, or a failure of an underlying run.
    """
    from usmtl.evaluation.paper_tables import table4

    thresholds = sorted({int(k) for k in thresholds})
    configs = {k: burden_config(cfg, k, column) for k in thresholds}  # all checked before training
    split_path = _prepare_directory(cfg, manifest, out_dir, split_file)
    rows = []
    for k, cfg_k in configs.items():
        child = TaskGraph.from_config(cfg_k.tasks).edges[0][1]
        print(f"== {column} >= {k} ==", flush=True)
        result = run_experiment(cfg_k, manifest, os.path.join(out_dir, f"ge{k}"), repeats,
                                variants, split_path, verbose, interval)
        summary = result["summary"]
        rows += [{"threshold": k, **r} for r in
                 summary[summary["task"] == child].to_dict("records")]
        if radiomics:
            rows += [{"threshold": k, **r} for r in _radiomics_rows(
                radiomics, os.path.join(out_dir, "radiomics", f"ge{k}"), cfg_k, split_path,
                [child])[0]]
    burden = pd.DataFrame(rows)
    write_csv_atomic(os.path.join(out_dir, "burden.csv"), burden)
    base_child = TaskGraph.from_config(cfg.tasks).edges[0][1]  # its display name labels the rows
    text, frame = table4(burden, column, repeats, interval, paper=paper,
                         name=display_names(cfg.tasks)[base_child])
    write_text_atomic(os.path.join(out_dir, "table4.md"), text)
    write_csv_atomic(os.path.join(out_dir, "table4.csv"), frame)
    return {"burden": burden, "markdown": text}


def tune(cfg: ExperimentConfig, manifest: str, out_dir: str, margins, weights,
         split_file: str | None = None, verbose=0, child_weights=None,
         select: str = "mean") -> pd.DataFrame:
    """Grid search on the validation split: the hinge margin m and weight lambda (as the paper
    chose m = 0.1 and lambda = 0.05) and, with ``child_weights``, the children's loss weight
    (every child task's ``loss_weight``). Reuses finished grid points. Writes grid.csv and
    best.json.

    Args:
        cfg: the config (at least one parent -> child edge).
        manifest, out_dir, split_file: as :func:`run_experiment`.
        margins, weights: the hinge margins and weights to try.
        child_weights: loss weights for the child tasks to try (None: keep the config's).
        select: what "best" maximises: ``mean`` (the mean validation AUC over tasks) or a
            task name (its validation AUC, e.g. the parent's).

    Returns:
        grid.csv as a DataFrame: one row per grid point with ``val_auc_mean``, each task's
        ``val_auc_<task>``, ``score`` (what ``select`` maximises) and the run directory.

    Raises:
        UsmtlError: no edge among the tasks, or ``select`` is neither ``mean`` nor a task.
    """
    from usmtl.training.fit import fit_or_resume

    graph = TaskGraph.from_config(cfg.tasks)
    if not graph.edges:
        raise UsmtlError("tune needs at least one parent -> child edge among the tasks. "
                         f"Received tasks: {[t.name for t in cfg.tasks]}")
    if select != "mean" and select not in graph.names:
        raise UsmtlError(f"select must be 'mean' or a task ({graph.names}). Received: {select!r}")
    children = {child for _, child in graph.edges}
    split_path = _prepare_directory(cfg, manifest, out_dir, split_file)
    rows = []
    grid = list(itertools.product(margins, weights, child_weights or [None]))
    for i, (margin, weight, child_weight) in enumerate(grid, start=1):
        run_cfg = copy.deepcopy(cfg)
        run_cfg.model.hinge, run_cfg.model.hinge_margin, run_cfg.model.hinge_weight = True, margin, weight
        name = f"m{margin:g}_lambda{weight:g}"
        if child_weight is not None:
            for task in run_cfg.tasks:
                if task.name in children:
                    task.loss_weight = float(child_weight)
            name += f"_child{child_weight:g}"
        run_dir = os.path.join(out_dir, "runs", name)
        result, what = fit_or_resume(run_cfg.validate(), manifest, run_dir, split_path, verbose=verbose)
        aucs = {t: m.get("auc") for t, m in result.val_metrics.items()}
        known = [a for a in aucs.values() if a is not None and not math.isnan(a)]
        mean = float(np.mean(known)) if known else math.nan
        score = mean if select == "mean" else aucs.get(select, math.nan)
        rows.append({"margin": margin, "weight": weight,
                     **({"child_weight": child_weight} if child_weight is not None else {}),
                     "val_auc_mean": mean, **{f"val_auc_{t}": a for t, a in aucs.items()},
                     "score": score, "run": run_dir})
        print(f"[{i}/{len(grid)}] {name}: validation AUC ({select}) {score:.4f} ({what})", flush=True)
    frame = pd.DataFrame(rows)
    write_csv_atomic(os.path.join(out_dir, "grid.csv"), frame)
    if frame["score"].notna().any():
        best = frame.loc[frame["score"].idxmax()]
        write_json_atomic(os.path.join(out_dir, "best.json"), {
            "margin": float(best["margin"]), "weight": float(best["weight"]),
            **({"child_weight": float(best["child_weight"])} if "child_weight" in best else {}),
            "select": select, "score": float(best["score"]),
            "val_auc_mean": float(best["val_auc_mean"])})
    return frame
