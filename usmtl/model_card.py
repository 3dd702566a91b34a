"""``usmtl report``: a model card, one Markdown document per run.

Its sections follow what reporting guidelines for prediction models ask of a clinical model
(TRIPOD+AI, Collins et al., BMJ 2024; CLAIM 2024; Mitchell et al.'s model cards, FAT* 2019):
intended use, model, data and split, performance with CIs, calibration, clinical utility
(decision curves, operating points), subgroups, external validation, the shortcut audit,
limitations, and Mitchell et al.'s factors, ethical considerations, licence, authors and
citation (:mod:`usmtl.card_sections`). A JSON twin (``model_card.json`` beside the card)
holds the same sections and the per-task figures for machines. Every figure comes from the package's own evaluations of the run (the
evaluation is rerun, so the card always matches the run as it is now); a section with nothing
to show says what would fill it.

Example:
    >>> from usmtl.model_card import write_model_card
    >>> card = write_model_card("runs/busbra", by=["device"], validation="runs/busbra/external")  # doctest: +SKIP
    >>> print(card["toc"])  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from usmtl.errors import UsmtlError
from usmtl.evaluation.cells import format_interval
from usmtl.evaluation.report import task_text
from usmtl.card_sections import (authors, citation, ethics, factors, json_twin, licence,
                                 slope_reading)
from usmtl.evaluation.cells import cell

INTENDED_USE = (
    "Research use. From a box-level region of interest of a breast-mass ultrasound image, the "
    "model estimates the probability of each task below{tasks}. It is a decision-support "
    "prototype for studying multi-task learning with a hierarchical constraint (Li, Guo et al., "
    "Front. Physiol. 2022), not a medical device: it has not been evaluated prospectively, and "
    "no clinical decision should rest on it. The user supplies the lesion box (it does not "
    "detect lesions); images without a lesion are outside its scope.")


def _link(path: str, card_dir: str) -> str:
    return os.path.relpath(path, card_dir).replace(os.sep, "/")


def _model_section(cfg, info: dict, versions: dict, calibration: dict | None) -> list[str]:
    from usmtl.evaluation.calibration_maps import describe
    from usmtl.tasks import TaskGraph, display_names

    graph = TaskGraph.from_config(cfg.tasks)
    names = display_names(cfg.tasks)
    rows = ["| task | name | label | parent | cohort |", "|---|---|---|---|---|"]
    for task in cfg.tasks:
        rows.append(f"| {names[task.name]} | `{task.name}` | {task.label} | {task.parent or '-'} | "
                    f"{graph.cohort_text(task.name)} |")
    m, t, d = cfg.model, cfg.train, cfg.data
    hinge = (f"hierarchical hinge on, margin {m.hinge_margin}, weight {m.hinge_weight}"
             if m.hinge and graph.edges else "no hierarchical hinge")
    return [f"- Config `{info.get('config_name', cfg.name)}`: backbone {m.backbone} (weights "
            f"{m.weights}), one sigmoid head per task, {hinge}.",
            f"- Input: the lesion box with a {d.roi_margin:g} margin"
            f"{', squared' if d.square_roi else ''}, resized to {d.image_size}x{d.image_size}"
            f"{'; burned-in marks inpainted first' if getattr(d, 'inpaint_marks', False) else ''}.",
            f"- Training: {t.epochs} epochs, learning rate {t.learning_rate:g}, batch "
            f"{t.batch_size}; {info.get('seconds', math.nan):.0f} s on "
            f"{', '.join(versions.get('devices', ['?']))} ({info.get('precision', '?')}).",
            f"- Scores: {describe(calibration)}.",
            f"- Software: usmtl {versions.get('usmtl', '?')}, TensorFlow "
            f"{versions.get('tensorflow', '?')}, Keras {versions.get('keras', '?')}.",
            "", *rows, ""]


def data_summary(run) -> pd.DataFrame:
    """Images, patients and positives per task in each split of the run's manifest."""
    from usmtl.data.manifest import read_manifest
    from usmtl.data.splits import rows_in_split
    from usmtl.tasks import TaskGraph, label_table

    manifest = read_manifest(run.manifest_path)
    graph = TaskGraph.from_config(run.config().tasks)
    present = graph.present(manifest.frame.columns)
    splits = rows_in_split(manifest, run.split())
    labels = label_table(manifest, present) if present.tasks else {}
    patients = manifest.patient_ids()
    rows = []
    for split in ("train", "val", "test"):
        keep = splits == split
        row = {"split": split, "images": int(keep.sum()),
               "patients": int(len(set(np.asarray(patients)[keep])))}
        for task, y in labels.items():
            known = keep & ~np.isnan(y)
            row[task] = f"{int(np.nansum(y[known]))}/{int(known.sum())}"
        rows.append(row)
    return pd.DataFrame(rows)


def _table(frame: pd.DataFrame) -> list[str]:
    columns = list(frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(row[c]) for c in columns) + " |")
    return lines


def _performance(report: dict) -> list[str]:
    from usmtl.evaluation.metrics import METRICS

    lines = ["| task | cohort | n (pos) | " + " | ".join(METRICS) + " |",
             "|" + "---|" * (len(METRICS) + 3)]
    for task, e in report["tasks"].items():
        lines.append(f"| {task_text(report, task)} | {e['cohort']} | {e['n']} ({e['positives']}) | "
                     + " | ".join(format_interval(e["image"][m]) for m in METRICS) + " |")
    return lines


def _figures(report: dict, card_dir: str, eval_dir: str, stem: str, title: str) -> list[str]:
    """Links to the evaluation's ``<stem>_<task>.png`` figures that exist."""
    lines = []
    for task in report["tasks"]:
        path = os.path.join(eval_dir, f"{stem}_{task}.png")
        if os.path.isfile(path):
            lines += ["", f"![{title}: {task_text(report, task)}]({_link(path, card_dir)})"]
    return lines


def _calibration(report: dict, card_dir: str, eval_dir: str) -> list[str]:
    lines = ["| task | Brier | ECE | intercept | slope |", "|---|---|---|---|---|"]
    for task, e in report["tasks"].items():
        c = e.get("calibration", {})
        lines.append(f"| {task_text(report, task)} | " + " | ".join(format_interval(c.get(k)) for k in
                                                 ("brier", "ece", "intercept", "slope")) + " |")
    return lines + _figures(report, card_dir, eval_dir, "reliability", "Reliability")


def _utility(report: dict, card_dir: str, eval_dir: str) -> list[str]:
    lines = ["| task | rule | chosen on | threshold | sensitivity | specificity |",
             "|---|---|---|---|---|---|"]
    for task, e in report["tasks"].items():
        for point in e.get("operating_points", []):
            threshold = "-" if math.isnan(point["threshold"]) else f"{point['threshold']:.3f}"
            lines.append(f"| {task_text(report, task)} | {point['rule']} | {point['chosen_on']} | "
                         f"{threshold} | {format_interval(point.get('sensitivity'))} | "
                         f"{format_interval(point.get('specificity'))} |")
    return lines + _figures(report, card_dir, eval_dir, "decision_curve", "Decision curve")


def _subgroups(report: dict, card_dir: str, eval_dir: str) -> list[str]:
    from usmtl.evaluation.cells import safe_name

    lines = []
    for column, tasks in report.get("subgroups", {}).items():
        for task, result in tasks.items():
            het = result.get("heterogeneity", {})
            lines += [f"### {task_text(report, task)} by {column}", ""]
            table = pd.DataFrame(result.get("table", []))
            if not table.empty:
                lines += ["| group | n (pos) | AUC | sensitivity | specificity | note |",
                          "|---|---|---|---|---|---|"]
                for _, g in table.iterrows():
                    cells = [format_interval({"value": g[m], "ci_low": g[f"{m}_ci_low"],
                                   "ci_high": g[f"{m}_ci_high"]})
                             for m in ("auc", "sensitivity", "specificity")]
                    note = g.get("note") if isinstance(g.get("note"), str) else ""
                    lines.append(f"| {g['group']} | {g['n']} ({g['positives']}) | "
                                 + " | ".join(cells) + f" | {note} |")
            if het and not math.isnan(het.get("q", math.nan)):
                lines += ["", f"Heterogeneity of AUC (Cochran's Q): Q = {het['q']:.2f}, "
                              f"df = {het['df']}, p = {het['p']:.3f}, I² = {het['i2']:.2f}."]
            else:
                lines += ["", "Heterogeneity of AUC not testable: fewer than two groups with "
                              "both classes and a finite AUC variance."]
            path = os.path.join(eval_dir, f"forest_{safe_name(column)}_{task}.png")
            if os.path.isfile(path):
                lines += ["", f"![Forest plot: {task} by {column}]({_link(path, card_dir)})"]
            lines.append("")
    return lines


def _audit_lines(audit: dict) -> list[str]:
    """The audit's own report, its headings moved under the card's section."""
    return [("##" + line) if line.startswith("#") else line
            for line in audit["markdown"].splitlines()]


def limitations(report: dict, summary: pd.DataFrame, validation: dict | None,
                audit: dict | None, calibration: dict | None) -> list[str]:
    """Limitations the figures themselves show, then the standing ones."""
    items = []
    test = summary[summary["split"] == "test"].iloc[0] if len(summary) else None
    for task, e in report["tasks"].items():
        auc = e["image"]["auc"]
        if e["positives"] < 50 or e["n"] - e["positives"] < 50:
            items.append(f"{task}: few test cases of a class ({e['positives']} positive, "
                         f"{e['n'] - e['positives']} negative); its intervals are wide.")
        if not math.isnan(auc.get("ci_low", math.nan)) and auc["ci_low"] <= 0.5:
            items.append(f"{task}: the AUC's 95% CI includes chance ({format_interval(auc)}).")
        slope = e.get("calibration", {}).get("slope")
        if slope and not math.isnan(slope["value"]) and abs(slope["value"] - 1) > 0.2:
            if calibration and task not in calibration["tasks"]:
                advice = "`usmtl calibrate` left it raw (it could not be recalibrated on validation)"
            elif calibration:
                advice = "even after `usmtl calibrate` (fitted on validation)"
            else:
                advice = "consider `usmtl calibrate`"
            items.append(f"{task}: calibration slope {slope['value']:.2f} "
                         f"({slope_reading(slope['value'])}); {advice}.")
    if validation is None:
        items.append("No external validation: performance on other hospitals, scanners or "
                     "populations is unknown (`usmtl validate RUN EXTERNAL`).")
    if audit is None:
        items.append("No shortcut audit: whether the model attends to the lesion or to "
                     "burned-in marks was not measured (`usmtl report --audit`).")
    else:
        items += [f"Shortcut audit: {w.removeprefix('WARNING: ')}" for w in audit.get("warnings", [])]
    items += ["Image-level labels and the lesion box are taken as given; errors in them are not "
              "modelled.",
              "The test split comes from the same source as training (patient-level split); "
              "it estimates internal, not external, performance."]
    if test is not None:
        items.append(f"Test split: {test['images']} images of {test['patients']} patients.")
    return [f"- {item}" for item in items]


def write_model_card(run_dir: str, out: str | None = None, by=None, validation: str | None = None,
                     audit: bool = False, n_boot: int = 1000, seed: int = 0) -> dict:
    """Write the run's model card.

    Args:
        run_dir: a finished run directory.
        out: the Markdown file (default ``RUN/model_card.md``).
        by: manifest columns for subgroup analyses (``["device"]``).
        validation: the folder of a ``usmtl validate`` report, to include.
        audit: run the shortcut audit (Grad-CAM over the test split) and include it.
        n_boot: patient-bootstrap resamples of every CI.
        seed: the bootstrap's seed.

    Returns:
        ``{"path": the card, "toc": its table of contents, "sections": [...]}``.

    Raises:
        UsmtlError: not a run; a ``by`` column missing; ``validation`` not a validate report.
    """
    from usmtl.evaluation.evaluate import evaluate_run
    from usmtl.run import Run, read_json, write_text_atomic

    run = Run.open(run_dir)
    cfg = run.config()
    out = out or os.path.join(run_dir, "model_card.md")
    card_dir = os.path.dirname(os.path.abspath(out))
    validated = None
    if validation is not None:
        path = os.path.join(validation, "validation.json")
        if not os.path.isfile(path):
            raise UsmtlError(f"--validation must be the folder of a 'usmtl validate' report "
                             f"(with validation.json). Received: {validation}")
        validated = read_json(path)
    report = evaluate_run(run_dir, n_boot=n_boot, seed=seed, by=list(by or []))
    eval_dir = report["out_dir"]
    audited = None
    if audit:
        from usmtl.explain.audit import shortcut_audit

        audited = shortcut_audit(run_dir, run.manifest_path, split="test", n_boot=n_boot,
                                 seed=seed, out=os.path.join(run_dir, "audit"))
    summary = data_summary(run)
    tasks = ", ".join(t.name for t in cfg.tasks)
    sections = {
        "Intended use": [INTENDED_USE.format(tasks=f" ({tasks})")],
        "Model": _model_section(cfg, run.info(), _versions(run), run.calibration()),
        "Data and split": [f"Manifest: `{run.manifest_path}`. Patient-level split; positives/"
                           f"labelled per task (each within its cohort).", "", *_table(summary)],
        "Performance (internal test)": [
            f"Image level, threshold {report['threshold']}; 95% CIs from {report['bootstrap']} "
            f"bootstrap resamples of patients.", "", *_performance(report)],
        "Calibration": _calibration(report, card_dir, eval_dir),
        "Clinical utility": ["Operating points: thresholds chosen on the validation split, "
                             "applied to test. Decision curves: net benefit against threshold "
                             "probability, with treat-all and treat-none.", "",
                             *_utility(report, card_dir, eval_dir)],
        "Subgroups": _subgroups(report, card_dir, eval_dir)
        or ["Not analysed: pass `--by COLUMN` (for example `--by device`)."],
        "External validation": _external(validated, validation, card_dir),
        "Shortcut audit": _audit_lines(audited) if audited
        else ["Not run: pass `--audit` (Grad-CAM over the test split)."],
        "Limitations": limitations(report, summary, validated, audited, run.calibration()),
        "Factors": factors(by),
        "Ethical considerations": ethics(),
        "Licence": licence(),
        "Authors and contact": authors(run.info()),
        "Citation": citation(),
    }
    toc = "\n".join(f"{i}. [{name}](#{name.lower().replace(' ', '-').replace('(', '').replace(')', '')})"
                    for i, name in enumerate(sections, 1))
    parts = [f"# Model card: {os.path.basename(os.path.abspath(run_dir))}", "",
             f"Run `{run_dir}`, finished {run.info().get('finished', '?')}. Written by `usmtl report`.",
             "", "## Contents", "", toc, ""]
    for name, lines in sections.items():
        parts += [f"## {name}", "", *lines, ""]
    os.makedirs(card_dir, exist_ok=True)
    write_text_atomic(out, "\n".join(parts))
    from usmtl.run import write_json_atomic

    twin = os.path.splitext(out)[0] + ".json"  # the machine-readable twin
    write_json_atomic(twin, json_twin(run_dir, cfg, sections, report, by))
    return {"path": out, "json": twin, "toc": toc, "sections": list(sections)}


def _versions(run) -> dict:
    from usmtl.run import read_json

    return read_json(run.versions_path) if os.path.isfile(run.versions_path) else {}


def _external(validated: dict | None, folder: str | None, card_dir: str) -> list[str]:
    if validated is None:
        return ["Not done: run `usmtl validate RUN EXTERNAL_MANIFEST --out DIR`, then pass "
                "`--validation DIR`."]
    table = pd.DataFrame(validated["rows"])
    keep = table[table["figure"].isin(["AUC", "Brier score", "calibration slope",
                                       "sensitivity at 0.5", "specificity at 0.5"])]
    lines = [f"- {note}" for note in validated["notes"]] + [""]
    lines += ["| task | figure | internal test | external | change |", "|---|---|---|---|---|"]
    for _, r in keep.iterrows():
        lines.append(f"| {task_text(validated.get('internal', {}), r['task'])} | {r['figure']} | "
                     f"{cell(r['internal'])} | "
                     f"{cell(r['external'])} | {cell(r['change'], '+.3f')} |")
    lines += ["", f"Full report: [{_link(os.path.join(folder, 'validation.md'), card_dir)}]"
                  f"({_link(os.path.join(folder, 'validation.md'), card_dir)})"]
    return lines
