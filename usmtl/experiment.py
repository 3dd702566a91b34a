"""``usmtl experiment`` and ``usmtl tune``: the paper's protocol in one command each.

``run_experiment`` trains the four variants of Li, Guo et al. (2022) (Single-BM, Single-ALNM,
Multi-Task, Multi-Task + HL; every multi-task variant also carries the nodal-burden heads of the
config) ``repeats`` times with different seeds on one fixed, saved patient-level test split,
then aggregates mean ± SD and the 95% CI over repeats (the paper's Tables 2-4), p-values
between variants (paired t-test over repeats; DeLong on predictions averaged over repeats) and
inconsistency rates with and without the hinge. Re-running resumes: finished runs are reused,
an interrupted one continues from its last epoch.

``tune`` grid-searches the hinge margin m and weight lambda on the validation split, as the
paper chose m = 0.1 and lambda = 0.05.

Layout of an experiment directory::

    experiment.yaml  split.csv  runs/<variant>/repeat-<k>/ (run directories)
    results.csv (one row per run, task and metric)  summary.csv  pvalues.csv
    inconsistency.csv  tables.md
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os

import numpy as np
import pandas as pd

from usmtl.config import VARIANTS, ExperimentConfig, apply_variant, config_to_dict, save_config
from usmtl.data.splits import SPLIT_FILE, save_split
from usmtl.errors import UsmtlError
from usmtl.evaluation import stats
from usmtl.evaluation.metrics import METRICS, binary_metrics
from usmtl.tasks import TaskGraph

EXPERIMENT_CONFIG = "experiment.yaml"


def _prepare_directory(cfg: ExperimentConfig, manifest: str, out_dir: str,
                       split_file: str | None) -> str:
    """Save the config and the one split of the experiment (or check the saved ones)."""
    import yaml

    from usmtl.data.splits import load_split
    from usmtl.training.fit import prepare_data

    config_path = os.path.join(out_dir, EXPERIMENT_CONFIG)
    split_path = os.path.join(out_dir, SPLIT_FILE)
    if os.path.isfile(config_path):
        with open(config_path) as f:
            saved = yaml.safe_load(f)
        if saved != config_to_dict(cfg):
            raise UsmtlError(f"{out_dir} holds an experiment with another config; use a new --out "
                             f"or the same config. Received: a config that differs from "
                             f"{config_path}")
        prepare_data(cfg, manifest, split_path)  # the manifest must still fit the split
        return split_path
    data = prepare_data(cfg, manifest, split_file)
    os.makedirs(out_dir, exist_ok=True)
    save_split(load_split(split_file) if split_file else data.split, split_path)
    save_config(cfg, config_path)
    return split_path


def _run_metrics(frame: pd.DataFrame, graph: TaskGraph) -> list[dict]:
    rows = []
    for task in graph.names:
        m = binary_metrics(frame[f"y_{task}"], frame[f"p_{task}"])
        rows += [{"task": task, "metric": k, "value": m[k]} for k in METRICS]
    for edge, r in stats.hierarchy_inconsistency(frame, graph.edges).items():
        rows += [{"task": edge, "metric": f"inconsistency_{kind}", "value": r[kind]}
                 for kind in ("hard", "soft")]
    return rows


def run_experiment(cfg: ExperimentConfig, manifest: str, out_dir: str, repeats: int = 5,
                   variants=VARIANTS, split_file: str | None = None, verbose=0) -> dict:
    """Train every variant ``repeats`` times on one split; write and return the tables."""
    from usmtl.evaluation.evaluate import run_predictions
    from usmtl.training.fit import fit_or_resume

    if repeats < 1:
        raise UsmtlError(f"repeats must be >= 1. Received: {repeats}")
    for v in variants:
        apply_variant(cfg, v)  # unknown variants fail before any training
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
    results = pd.DataFrame(rows)
    results.to_csv(os.path.join(out_dir, "results.csv"), index=False)
    summary = summarize(results)
    summary.to_csv(os.path.join(out_dir, "summary.csv"), index=False)
    pvalues = variant_pvalues(results, predictions)
    pvalues.to_csv(os.path.join(out_dir, "pvalues.csv"), index=False)
    inconsistency = summary[summary["metric"].str.startswith("inconsistency_")]
    inconsistency.to_csv(os.path.join(out_dir, "inconsistency.csv"), index=False)
    text = tables_markdown(summary, pvalues, repeats, cfg)
    with open(os.path.join(out_dir, "tables.md"), "w") as f:
        f.write(text)
    return {"results": results, "summary": summary, "pvalues": pvalues, "markdown": text}


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """mean, SD and the t-based 95% CI over repeats, per variant, task and metric."""
    rows = []
    for (variant, task, metric), group in results.groupby(["variant", "task", "metric"], sort=False):
        rows.append({"variant": variant, "task": task, "metric": metric,
                     **stats.summarize_repeats(group["value"].to_numpy(float), bounds=(0.0, 1.0))})
    return pd.DataFrame(rows)


def _pooled(predictions: dict, variant: str, task: str):
    """Labels and repeat-averaged scores of one variant, in a fixed image order."""
    frames = [f.set_index("image") for (v, _), f in sorted(predictions.items()) if v == variant]
    if not frames or f"p_{task}" not in frames[0]:
        return None
    scores = np.mean([f[f"p_{task}"].to_numpy(float) for f in frames], axis=0)
    return pd.DataFrame({"y": frames[0][f"y_{task}"], "p": scores}, index=frames[0].index)


def variant_pvalues(results: pd.DataFrame, predictions: dict) -> pd.DataFrame:
    """Per task and pair of variants: paired t-test on AUC over repeats, DeLong on pooled
    (repeat-averaged) predictions."""
    rows = []
    aucs = results[results["metric"] == "auc"]
    for task in aucs["task"].unique():
        by_variant = {v: g.sort_values("repeat")["value"].to_numpy(float)
                      for v, g in aucs[aucs["task"] == task].groupby("variant", sort=False)}
        for a, b in itertools.combinations(by_variant, 2):
            t = stats.paired_repeats_test(by_variant[a], by_variant[b])
            pa, pb = _pooled(predictions, a, task), _pooled(predictions, b, task)
            d = stats.delong_test(pa["y"].to_numpy(float), pa["p"].to_numpy(float),
                                  pb.loc[pa.index, "p"].to_numpy(float))
            rows.append({"task": task, "variant_a": a, "variant_b": b,
                         "auc_diff_mean": t["diff"], "paired_t_p": t["p"],
                         "pooled_auc_a": d["auc_a"], "pooled_auc_b": d["auc_b"], "delong_p": d["p"]})
    return pd.DataFrame(rows)


def _cell(summary: pd.DataFrame, variant: str, task: str, metric: str) -> str:
    row = summary[(summary["variant"] == variant) & (summary["task"] == task) &
                  (summary["metric"] == metric)]
    return "-" if row.empty else stats.format_mean_sd_ci(row.iloc[0].to_dict())


def tables_markdown(summary: pd.DataFrame, pvalues: pd.DataFrame, repeats: int,
                    cfg: ExperimentConfig) -> str:
    """The paper's Tables 2-4 shape: one table per task, a row per variant, mean ± SD (95% CI)."""
    parts = [f"# Experiment: {cfg.name}", "",
             f"Test split fixed once; {repeats} repeat(s) per variant with different seeds. "
             f"Cells: mean ± SD (95% CI of the mean over repeats), image level, threshold 0.5.", ""]
    for task in TaskGraph.from_config(cfg.tasks).names:
        variants = summary.loc[summary["task"] == task, "variant"].unique()
        parts += [f"## {task}", "", "| model | " + " | ".join(METRICS) + " |",
                  "|---|" + "---|" * len(METRICS)]
        for v in variants:
            parts.append(f"| {v} | " + " | ".join(_cell(summary, v, task, m) for m in METRICS) + " |")
        parts.append("")
    inc = summary[summary["metric"].str.startswith("inconsistency_")]
    if not inc.empty:
        parts += ["## Inconsistent predictions (share of test images)", "",
                  "Hard: child >= 0.5 while parent < 0.5. Soft: child score above parent score.", "",
                  "| model | edge | hard | soft |", "|---|---|---|---|"]
        for (v, edge), _ in inc.groupby(["variant", "task"], sort=False):
            parts.append(f"| {v} | {edge} | {_cell(summary, v, edge, 'inconsistency_hard')} | "
                         f"{_cell(summary, v, edge, 'inconsistency_soft')} |")
        parts.append("")
    if not pvalues.empty:
        parts += ["## p-values between models (AUC)", "",
                  "| task | A | B | mean AUC diff | paired t p | DeLong p (pooled) |",
                  "|---|---|---|---|---|---|"]
        for r in pvalues.itertuples():
            parts.append(f"| {r.task} | {r.variant_a} | {r.variant_b} | {r.auc_diff_mean:+.3f} | "
                         f"{r.paired_t_p:.3g} | {r.delong_p:.3g} |")
        parts.append("")
    return "\n".join(parts)


def tune(cfg: ExperimentConfig, manifest: str, out_dir: str, margins, weights,
         split_file: str | None = None, verbose=0) -> pd.DataFrame:
    """Grid search of the hinge margin and weight on the validation split (mean validation
    AUC over tasks); reuses finished grid points. Writes grid.csv and best.json."""
    from usmtl.training.fit import fit_or_resume

    if not TaskGraph.from_config(cfg.tasks).edges:
        raise UsmtlError("tune needs at least one parent -> child edge among the tasks. "
                         f"Received tasks: {[t.name for t in cfg.tasks]}")
    split_path = _prepare_directory(cfg, manifest, out_dir, split_file)
    rows = []
    grid = list(itertools.product(margins, weights))
    for i, (margin, weight) in enumerate(grid, start=1):
        run_cfg = copy.deepcopy(cfg)
        run_cfg.model.hinge, run_cfg.model.hinge_margin, run_cfg.model.hinge_weight = True, margin, weight
        run_dir = os.path.join(out_dir, "runs", f"m{margin:g}_lambda{weight:g}")
        result, what = fit_or_resume(run_cfg.validate(), manifest, run_dir, split_path, verbose=verbose)
        aucs = [m["auc"] for m in result.val_metrics.values()
                if m.get("auc") is not None and not math.isnan(m["auc"])]
        score = float(np.mean(aucs)) if aucs else math.nan
        rows.append({"margin": margin, "weight": weight, "val_auc_mean": score,
                     **{f"val_auc_{t}": m["auc"] for t, m in result.val_metrics.items()},
                     "run": run_dir})
        print(f"[{i}/{len(grid)}] m={margin:g} lambda={weight:g}: val AUC {score:.4f} ({what})",
              flush=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(os.path.join(out_dir, "grid.csv"), index=False)
    if frame["val_auc_mean"].notna().any():
        best = frame.loc[frame["val_auc_mean"].idxmax()]
        with open(os.path.join(out_dir, "best.json"), "w") as f:
            json.dump({"margin": float(best["margin"]), "weight": float(best["weight"]),
                       "val_auc_mean": float(best["val_auc_mean"])}, f, indent=2)
    return frame
