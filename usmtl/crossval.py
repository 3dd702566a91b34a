"""``usmtl experiment --folds / --cv``: cross-validation on given or drawn patient folds.

Each fold tests on its own patients and trains on the other folds (less a stratified
validation share, ``data.val_fraction`` of the training folds' patients, for checkpoint
selection), so over the folds every image is tested exactly once: its out-of-fold (OOF)
prediction. BUS-BRA's official folds (Gomez-Flores et al., Med. Phys. 2024) come with
``usmtl import busbra`` as the manifest column ``fold``: ``--folds fold``.

Each variant trains ``repeats`` times per fold (seeds ``train.seed + k - 1``). Scored, per task
within its cohort:

- every repeat alone, and with ``repeats > 1`` the ensemble of the repeats (the rule of
  :mod:`usmtl.evaluation.ensemble`, stored in ``cv.json``);
- with ``tta`` ``flip``, each of these again with the horizontal flip averaged in;
- per fold, then mean ± SD over the folds with the paper's interval mean ± t(0.975, k-1)·SD
  (Li, Guo et al. 2022), and the pooled OOF metrics with a patient-bootstrap 95% CI of the AUC.

Layout::

    experiment.yaml  folds.csv  cv.json  folds/fold-<f>/split.csv
    runs/<variant>/fold-<f>/repeat-<k>/ (run directories)
    oof.csv (one row per image and scored model)  cv_folds.csv  cv_summary.csv  cv.md

Re-running resumes: finished runs are reused, an interrupted one continues from its last epoch.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from usmtl.atomic import write_csv_atomic, write_json_atomic, write_text_atomic
from usmtl.config import VARIANTS, ExperimentConfig, apply_variant, save_config
from usmtl.data.folds import FOLDS_FILE, fold_order, fold_split, load_folds, resolve_folds, save_folds
from usmtl.data.splits import SPLIT_FILE, load_split, patient_strata, save_split
from usmtl.errors import UsmtlError
from usmtl.evaluation import stats
from usmtl.evaluation.ensemble import check_rule, check_tta, ensemble_frame
from usmtl.evaluation.metrics import METRICS, binary_metrics, roc_auc
from usmtl.experiment import EXPERIMENT_CONFIG, check_saved_config

CV_FILE = "cv.json"


def _fold_table(cfg: ExperimentConfig, manifest_path: str, folds, cv) -> tuple[dict, dict]:
    from usmtl.data.manifest import read_manifest
    from usmtl.tasks import Task, task_labels

    manifest = read_manifest(manifest_path)
    strata = task_labels(manifest, Task("stratify", cfg.data.stratify or cfg.tasks[0].label))
    table = resolve_folds(manifest, folds, cv, strata, cfg.data.split_seed)
    return table, patient_strata(manifest.patient_ids(), strata)


def _prepare(cfg: ExperimentConfig, manifest: str, out_dir: str, folds, cv) -> dict[str, str]:
    """Write (or check) the config, the fold table and each fold's split; the split paths."""
    table, strata = _fold_table(cfg, manifest, folds, cv)
    config_path, folds_path = (os.path.join(out_dir, n) for n in (EXPERIMENT_CONFIG, FOLDS_FILE))
    if check_saved_config(cfg, out_dir) and os.path.isfile(folds_path) \
            and load_folds(folds_path) != table:
        raise UsmtlError(f"{out_dir} was cross-validated on other folds; use a new --out. "
                         f"Received: folds that differ from {folds_path}")
    os.makedirs(out_dir, exist_ok=True)
    if not os.path.isfile(config_path):
        save_config(cfg, config_path)
    if not os.path.isfile(folds_path):
        save_folds(table, folds_path)
    strata = {p: (np.nan if s < 0 else float(s)) for p, s in strata.items()}
    paths = {}
    for fold in fold_order(table.values()):
        path = os.path.join(out_dir, "folds", f"fold-{fold}", SPLIT_FILE)
        split = fold_split(table, fold, strata, cfg.data.val_fraction, cfg.data.split_seed)
        if os.path.isfile(path):
            if load_split(path) != split:
                raise UsmtlError(f"{path} differs from the split its fold gives; use a new --out. "
                                 f"Received: a changed {path}")
        else:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            save_split(split, path)
        paths[fold] = path
    return paths


def run_cv(cfg: ExperimentConfig, manifest: str, out_dir: str, folds: str | None = None,
           cv: int | None = None, repeats: int = 1, variants=VARIANTS, tta: str = "none",
           rule: str = "mean", n_boot: int = 1000, verbose=0) -> dict:
    """Cross-validate every variant on patient folds; write and return the tables.

    Args:
        cfg: the experiment's config (variants derived with :func:`~usmtl.config.apply_variant`).
        manifest: the manifest CSV.
        out_dir: the experiment directory (re-running it resumes).
        folds: a manifest column (BUS-BRA: ``fold``) or a CSV (``patient_id,fold`` or
            ``image,fold``) giving each patient's fold.
        cv: instead of ``folds``, draw this many folds (patient-level, stratified by
            ``data.stratify``, seeded by ``data.split_seed``).
        repeats: runs per variant and fold; with more than one, their ensemble is scored too.
        variants: variant names.
        tta: ``none``, or ``flip`` to score every model with the mirrored crop averaged in too.
        rule: how the ensemble and TTA combine probabilities (``mean`` or ``logit``).
        n_boot: patient-bootstrap resamples of the pooled AUC's CI.

    Returns:
        ``{"oof", "folds", "summary", "markdown"}``: frames of ``oof.csv``, ``cv_folds.csv``,
        ``cv_summary.csv``, and the text of ``cv.md``.

    Raises:
        UsmtlError: both or neither of folds and cv, fewer than 2 folds, repeats < 1, an
            unknown variant, TTA or rule, another config or other folds in ``out_dir``.
        ManifestError: a row without a fold, a patient in two folds, a bad folds file.

    Example:
        >>> from usmtl.config import load_config
        >>> from usmtl.crossval import run_cv
        >>> out = run_cv(load_config("configs/busbra.yaml"), "busbra.csv", "cv", folds="fold",
        ...              variants=["single-bm"], repeats=3, tta="flip")  # doctest: +SKIP
        >>> print(out["markdown"])  # doctest: +SKIP
    """
    from usmtl.training.fit import fit_or_resume

    if not isinstance(repeats, int) or repeats < 1:
        raise UsmtlError(f"repeats must be >= 1. Received: {repeats!r}")
    check_tta(tta), check_rule(rule)
    for v in variants:
        apply_variant(cfg, v)  # unknown variants fail before any training
    splits = _prepare(cfg, manifest, out_dir, folds, cv)
    write_json_atomic(os.path.join(out_dir, CV_FILE),
                      {"folds": folds, "cv": cv, "repeats": repeats, "variants": list(variants),
                       "tta": tta, "rule": rule, "ensemble": "each fold's repeats, combined "
                       f"by the {rule} rule", "n_boot": n_boot})
    plan = [(v, f, k) for v in variants for f in splits for k in range(1, repeats + 1)]
    frames = {}
    for i, (variant, fold, k) in enumerate(plan, start=1):
        run_cfg = apply_variant(cfg, variant)
        run_cfg.train.seed = cfg.train.seed + k - 1
        run_dir = os.path.join(out_dir, "runs", variant, f"fold-{fold}", f"repeat-{k}")
        result, what = fit_or_resume(run_cfg, manifest, run_dir, splits[fold], verbose=verbose)
        frames[(variant, fold, k)] = _predictions(run_dir, tta)
        print(f"[{i}/{len(plan)}] {variant} fold {fold} repeat {k}: {what} "
              f"({result.seconds:.0f} s)", flush=True)
    return write_cv_tables(out_dir, frames, cfg, list(splits), repeats, variants, tta, rule, n_boot)


def _predictions(run_dir: str, tta: str) -> dict[str, pd.DataFrame]:
    """``{tta: test predictions}`` of one run, plain and flipped, each cached by the run."""
    from usmtl.evaluation.evaluate import run_predictions

    views = ("none", "flip") if tta == "flip" else ("none",)
    return {view: run_predictions(run_dir, None, "test", calibrated=False, tta=view)
            for view in views}


def _members(frames, variant, fold, repeats, tta, rule, edges):
    """``[(member, tta, frame)]`` of one variant and fold: each repeat, then the ensemble."""
    out = []
    for view in (("none", "flip") if tta == "flip" else ("none",)):
        runs = [frames[(variant, fold, k)][view] for k in range(1, repeats + 1)]
        out += [(f"repeat-{k}", view, f) for k, f in enumerate(runs, start=1)]
        if repeats > 1:
            out.append((f"ensemble-{repeats}", view,
                        ensemble_frame(runs, rule, [str(k) for k in range(1, repeats + 1)], edges)))
    return out


def write_cv_tables(out_dir, frames, cfg, folds, repeats, variants, tta, rule, n_boot) -> dict:
    """Score every model per fold and pooled; write ``oof.csv``, ``cv_folds.csv``,
    ``cv_summary.csv`` and ``cv.md``."""
    from usmtl.tasks import TaskGraph

    oof, fold_rows = [], []
    for variant in variants:
        graph = TaskGraph.from_config(apply_variant(cfg, variant).tasks)
        for fold in folds:
            for member, view, frame in _members(frames, variant, fold, repeats, tta, rule, graph.edges):
                keep = ["image", "patient_id"] + [c for c in frame.columns if c[:2] in ("p_", "y_")]
                part = frame[keep].assign(variant=variant, model=member, tta=view, fold=fold)
                oof.append(part)
                for task in graph.names:
                    m = binary_metrics(frame[f"y_{task}"], frame[f"p_{task}"])
                    fold_rows += [{"variant": variant, "model": member, "tta": view, "fold": fold,
                                   "task": task, "metric": k, "value": m[k]} for k in ("n", "positives") + METRICS]
    oof = pd.concat(oof, ignore_index=True)
    fold_frame = pd.DataFrame(fold_rows)
    from usmtl.evaluation.tables import with_display_names
    from usmtl.tasks import display_names

    names = display_names(cfg.tasks)
    summary = with_display_names(summarize_cv(oof, fold_frame, n_boot), names)
    text = cv_markdown(summary, fold_frame, folds, repeats, rule, names)
    write_csv_atomic(os.path.join(out_dir, "oof.csv"), oof)
    write_csv_atomic(os.path.join(out_dir, "cv_folds.csv"), fold_frame)
    write_csv_atomic(os.path.join(out_dir, "cv_summary.csv"), summary)
    write_text_atomic(os.path.join(out_dir, "cv.md"), text)
    return {"oof": oof, "folds": fold_frame, "summary": summary, "markdown": text}


def summarize_cv(oof: pd.DataFrame, fold_frame: pd.DataFrame, n_boot: int = 1000) -> pd.DataFrame:
    """Per scored model and task: each metric's mean ± SD over the folds (with the paper's
    interval) and its value on the pooled out-of-fold predictions; the pooled AUC with a
    patient-bootstrap CI."""
    rows = []
    keys = ["variant", "model", "tta", "task"]
    for key, group in fold_frame.groupby(keys, sort=False):
        labels = dict(zip(keys, key))
        pooled_rows = oof[(oof["variant"] == labels["variant"]) & (oof["model"] == labels["model"])
                          & (oof["tta"] == labels["tta"])]
        y, p = pooled_rows[f"y_{labels['task']}"], pooled_rows[f"p_{labels['task']}"]
        pooled = binary_metrics(y, p)
        low, high = stats.patient_bootstrap_ci(y, p, pooled_rows["patient_id"], roc_auc,
                                               n_boot=n_boot) if n_boot else (math.nan, math.nan)
        for metric in METRICS:
            s = stats.summarize_repeats(group.loc[group["metric"] == metric, "value"], bounds=(0, 1))
            rows.append({**labels, "metric": metric, "folds": s["n"], "mean": s["mean"], "sd": s["sd"],
                         "low": s["paper_low"], "high": s["paper_high"], "pooled": pooled[metric],
                         "pooled_low": low if metric == "auc" else math.nan,
                         "pooled_high": high if metric == "auc" else math.nan,
                         "n_images": pooled["n"], "positives": pooled["positives"]})
    return pd.DataFrame(rows)


def _f(v) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def cv_markdown(summary: pd.DataFrame, fold_frame: pd.DataFrame, folds, repeats: int, rule: str,
                names: dict | None = None) -> str:
    """Per task (headed by its display name, ``names`` as :func:`usmtl.tasks.display_name`
    takes them), the AUC of every scored model: per fold, mean ± SD (paper's interval), pooled
    OOF (patient-bootstrap 95% CI); then the other metrics' means at the 0.5 threshold."""
    from usmtl.tasks import display_name

    lines = [f"# Cross-validation, {len(folds)} patient-level folds", "",
             f"Each fold tests on its own patients and trains on the others; `repeat-k` is one "
             f"model per fold (seed k), `ensemble-{repeats}` the {rule} of the repeats' "
             f"probabilities, `flip` the crop and its mirror averaged ({rule}). Mean ± SD over "
             f"the folds with the paper's interval mean ± t(0.975, {len(folds) - 1})·SD; pooled: "
             f"the AUC of all out-of-fold predictions, with a patient-bootstrap 95% CI.", ""]
    for task in summary["task"].unique():
        auc = summary[(summary["task"] == task) & (summary["metric"] == "auc")]
        first = auc.iloc[0]
        lines += [f"## {display_name(task, names)} (n = {int(first['n_images'])} images, {int(first['positives'])} "
                  f"positive)", "",
                  "| variant | model | TTA | " + " | ".join(f"fold {f}" for f in folds)
                  + " | mean ± SD (interval) | pooled OOF AUC (95% CI) |",
                  "|---|---|---|" + "---|" * len(folds) + "---|---|"]
        for _, r in auc.iterrows():
            per = fold_frame[(fold_frame["variant"] == r["variant"]) & (fold_frame["model"] == r["model"])
                             & (fold_frame["tta"] == r["tta"]) & (fold_frame["task"] == task)
                             & (fold_frame["metric"] == "auc")]
            cells = [_f(per.loc[per["fold"] == f, "value"].iloc[0]) if (per["fold"] == f).any() else "—"
                     for f in folds]
            lines.append(f"| {r['variant']} | {r['model']} | {r['tta']} | " + " | ".join(cells)
                         + f" | {_f(r['mean'])} ± {_f(r['sd'])} ({_f(r['low'])}, {_f(r['high'])}) | "
                         f"{_f(r['pooled'])} ({_f(r['pooled_low'])}, {_f(r['pooled_high'])}) |")
        lines.append("")
    return "\n".join(lines)
