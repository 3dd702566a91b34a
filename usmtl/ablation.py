"""``usmtl ablation``: controls from several experiments side by side, against one reference.

An ablation asks what one change does to a task, for example what adding a child head does
to malignancy (Li, Guo et al. 2022 report Multi-Task above Single-BM; on BUS-BRA it falls
below). Each *arm* is one variant of one experiment directory (``usmtl experiment --out``);
every arm must share the reference's test split, and repeat k of every arm has the same seed,
so arms pair by repeat. Per arm:

- the parent's (or any task's) test AUC over repeats, mean ± SD (paper's interval);
- its difference from the reference: the mean paired difference over the repeats both have,
  Student's unpaired t-test (the paper's), the paired t-test, and DeLong on the
  repeat-averaged scores of the shared test images;
- the child's AUC within its cohort (the images whose parent label is 1: a control trained
  with an unmasked child is scored as the others);
- the parent's validation AUC at the kept epoch and its best over all epochs (whether the
  checkpoint rule explains a gap);
- the share of test images whose child score exceeds the parent's.

``select`` adds an arm that, per repeat, takes whichever of some arms had the best
validation AUC of the task: a setting chosen on validation, scored on test.

Example:
    >>> from usmtl.ablation import Arm, ablation_table
    >>> arms = [Arm("Single-BM", "exp/main", "single-bm"),
    ...         Arm("child 0.1", "exp/ctl_w01", "multitask-hl")]
    >>> frame = ablation_table(arms, task="malignancy")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError
from usmtl.evaluation import stats
from usmtl.evaluation.metrics import binary_metrics


@dataclasses.dataclass
class Arm:
    """One variant of one experiment directory, shown as ``label``."""

    label: str
    experiment: str
    variant: str


@dataclasses.dataclass
class _Repeat:
    k: int
    test: pd.DataFrame
    val_auc: float
    best_val_auc: float


def _repeats(arm: Arm, task: str) -> list[_Repeat]:
    folder = os.path.join(arm.experiment, "runs", arm.variant)
    if not os.path.isdir(folder):
        raise UsmtlError(f"{arm.label}: no runs of variant {arm.variant!r} in {arm.experiment}. "
                         f"Received: {folder}")
    found = []
    for name in sorted(os.listdir(folder)):
        run = os.path.join(folder, name)
        predictions = os.path.join(run, "test_predictions.csv")
        if not name.startswith("repeat-") or not os.path.isfile(predictions):
            continue  # unfinished: its test predictions are written last
        with open(os.path.join(run, "val_metrics.json")) as f:
            val = json.load(f).get(task, {}).get("auc", math.nan)
        history = pd.read_csv(os.path.join(run, "history.csv"))
        column = f"val_auc_{task}"
        best = float(history[column].max()) if column in history else math.nan
        found.append(_Repeat(int(name.split("-")[1]), pd.read_csv(predictions),
                             math.nan if val is None else float(val), best))
    if not found:
        raise UsmtlError(f"{arm.label}: no finished repeat in {folder}. Received: {folder}")
    return found


def _child_of(frame: pd.DataFrame, task: str) -> str | None:
    children = [c[2:] for c in frame.columns if c.startswith("p_") and c[2:] != task]
    return children[0] if children else None


def _child_auc(frame: pd.DataFrame, task: str, child: str) -> float:
    """The child's AUC within its parent's positives, whatever cohort it was trained on."""
    if child is None or f"p_{child}" not in frame:
        return math.nan
    inside = frame[frame[f"y_{task}"] == 1]
    return binary_metrics(inside[f"y_{child}"], inside[f"p_{child}"])["auc"]


def _pooled(repeats: list[_Repeat], task: str) -> pd.DataFrame:
    """Labels and repeat-averaged scores, as the experiment's tables pool them."""
    from usmtl.experiment import pooled_predictions

    return pooled_predictions({("arm", r.k): r.test for r in repeats}, "arm", task)


def select_on_validation(label: str, arms: dict[str, list[_Repeat]], names: list[str]):
    """Per repeat, the repeat of the arm (among ``names``) with the best validation AUC."""
    chosen, picks = [], []
    for k in sorted(set.intersection(*[{r.k for r in arms[n]} for n in names])):
        candidates = [(next(r for r in arms[n] if r.k == k), n) for n in names]
        repeat, name = max(candidates, key=lambda c: -math.inf if math.isnan(c[0].val_auc)
                           else c[0].val_auc)
        chosen.append(repeat)
        picks.append(name)
    return chosen, picks


def ablation_table(arms: list[Arm], task: str, reference: str | None = None,
                   select: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """One row per arm (and per ``select`` arm); see the module docstring.

    Args:
        arms: the arms; the first is the reference unless ``reference`` names another.
        task: the task compared (a root task: the child is the other scored head).
        reference: the label of the reference arm.
        select: ``{label: [arm labels]}``: arms chosen per repeat on validation AUC of
            ``task``.

    Raises:
        UsmtlError: an arm without finished repeats, arms on other test images, or an
            unknown reference or selected arm.
    """
    loaded = {arm.label: _repeats(arm, task) for arm in arms}
    picks = {}
    for label, names in (select or {}).items():
        unknown = [n for n in names if n not in loaded]
        if unknown:
            raise UsmtlError(f"select {label!r}: unknown arms {unknown}; arms: {list(loaded)}")
        loaded[label], picks[label] = select_on_validation(label, loaded, names)
    reference = reference or arms[0].label
    if reference not in loaded:
        raise UsmtlError(f"Unknown reference arm; arms: {list(loaded)}. Received: {reference!r}")
    ref = loaded[reference]
    ref_pool = _pooled(ref, task)
    ref_aucs = {r.k: binary_metrics(r.test[f"y_{task}"], r.test[f"p_{task}"])["auc"] for r in ref}
    rows = []
    for label, repeats in loaded.items():
        pool = _pooled(repeats, task)
        if set(pool.index) != set(ref_pool.index):
            raise UsmtlError(f"{label}: its test images differ from {reference}'s; arms must "
                             f"share one split (--split-file). Received: {len(pool)} images "
                             f"against {len(ref_pool)}")
        aucs = {r.k: binary_metrics(r.test[f"y_{task}"], r.test[f"p_{task}"])["auc"] for r in repeats}
        shared = sorted(set(aucs) & set(ref_aucs))
        child = _child_of(repeats[0].test, task)
        child_aucs = [_child_auc(r.test, task, child) for r in repeats]
        soft = [float((r.test[f"p_{child}"] > r.test[f"p_{task}"]).mean())
                if child and f"p_{child}" in r.test else math.nan for r in repeats]
        summary = stats.summarize_repeats(list(aucs.values()), bounds=(0.0, 1.0))
        child_summary = stats.summarize_repeats(child_aucs, bounds=(0.0, 1.0))
        same = label == reference
        delong = math.nan if same else stats.delong_test(
            ref_pool["y"].to_numpy(float), pool.loc[ref_pool.index, "p"].to_numpy(float),
            ref_pool["p"].to_numpy(float))["p"]
        rows.append({
            "arm": label, "repeats": len(repeats),
            "auc": stats.format_mean_sd_ci(summary), "auc_mean": summary["mean"],
            "auc_sd": summary["sd"],
            "diff_paired": math.nan if same else float(np.mean([aucs[k] - ref_aucs[k] for k in shared])),
            "unpaired_t_p": math.nan if same else stats.unpaired_repeats_test(
                list(aucs.values()), list(ref_aucs.values()))["p"],
            "paired_t_p": math.nan if same else stats.paired_repeats_test(
                [aucs[k] for k in shared], [ref_aucs[k] for k in shared])["p"],
            "delong_pooled_p": delong,
            "child": child or "-", "child_auc": stats.format_mean_sd_ci(child_summary),
            "child_auc_mean": child_summary["mean"],
            "val_auc_kept": float(np.nanmean([r.val_auc for r in repeats])),
            "val_auc_best_epoch": float(np.nanmean([r.best_val_auc for r in repeats])),
            "child_above_parent": float(np.nanmean(soft)) if not all(map(math.isnan, soft)) else math.nan,
            "chosen": ", ".join(picks.get(label, [])),
        })
    return pd.DataFrame(rows)


def ablation_markdown(frame: pd.DataFrame, task: str, reference: str) -> str:
    """The table as Markdown, with what each column is."""
    def num(x, fmt):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

    lines = [f"| arm | n | {task} AUC | Δ vs {reference} (paired) | unpaired t p | paired t p | "
             f"DeLong p (pooled) | child AUC within cohort | val AUC kept / best epoch | "
             f"child > parent |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in frame.itertuples():
        chosen = f" (chosen: {r.chosen})" if r.chosen else ""
        lines.append(
            f"| {r.arm}{chosen} | {r.repeats} | {r.auc} | {num(r.diff_paired, '+.3f')} | "
            f"{num(r.unpaired_t_p, '.3g')} | {num(r.paired_t_p, '.3g')} | "
            f"{num(r.delong_pooled_p, '.3g')} | {r.child_auc} | "
            f"{num(r.val_auc_kept, '.3f')} / {num(r.val_auc_best_epoch, '.3f')} | "
            f"{num(r.child_above_parent, '.3f')} |")
    lines += ["", f"AUC cells: mean ± SD (mean ± t·SD) over repeats, test split. Δ: mean of the "
                  f"per-repeat differences from {reference} (same seeds). DeLong compares the "
                  f"repeat-averaged scores. Child AUC: within the images whose {task} label is "
                  f"1. Val AUC: {task} on validation at the kept checkpoint / at its best epoch. "
                  f"Child > parent: share of test images whose child score exceeds the parent's."]
    return "\n".join(lines) + "\n"
