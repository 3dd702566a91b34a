"""Tables laid out as the paper prints them, ready to paste into a manuscript.

Li, Guo et al., Front. Physiol. 13:882648 (2022):

- Table 2: the CNN (Multi-Task + HL) against the radiomics baseline, per task;
- Table 3: the four variants (Single-BM, Single-ALNM, Multi-Task, Multi-Task + HL), per task;
- Table 4: nodal burden, ALNM >= k as separate tasks, CNN and radiomics.

Every table has the paper's six columns (ACC, SE, Prec, SP, F1, AUC); a cell is
``mean ± SD (low, high)`` with three decimals over the repeats, the interval the
experiment's (by default the paper's mean ± t(0.975, n-1)·SD). With ``paper=True`` each cell
also shows the published figure of the same role (:mod:`usmtl.paper`): the config's root
task stands for the paper's malignancy, its first child for ALNM, whatever they are named.

A row is labelled with the task's display name (the config's ``display_name``, else derived
from its name: :func:`usmtl.tasks.display_name`), never renamed after the paper; with
``paper=True`` the caption says which of the paper's tasks each row stands for, and the CSV
has it in ``paper_task``. Each table writes a Markdown file and a CSV with the same cells
(the task's name in ``task``, its label in ``display_name``, paper figures in their own
columns).

Example:
    >>> from usmtl.evaluation.paper_tables import format_cell
    >>> format_cell({"mean": 0.8712, "sd": 0.0061, "ci_low": 0.8543, "ci_high": 0.8881})
    '0.871 ± 0.006 (0.854, 0.888)'
    >>> format_cell({"mean": 0.848, "sd": float("nan")})
    '0.848'
"""

from __future__ import annotations

import math

import pandas as pd

from usmtl.paper import SOURCE, paper_figure
from usmtl.tasks import display_name

#: (metric, the paper's column heading), in the paper's column order.
COLUMNS = (("accuracy", "ACC"), ("sensitivity", "SE"), ("precision", "Prec"),
           ("specificity", "SP"), ("f1", "F1"), ("auc", "AUC"))
VARIANT_NAMES = {"single-bm": "Single-BM", "single-alnm": "Single-ALNM",
                 "multitask": "Multi-Task", "multitask-hl": "Multi-Task + HL",
                 "radiomics": "Radiomics"}
_PAPER_VARIANT_ORDER = ("radiomics", "single-bm", "single-alnm", "multitask", "multitask-hl")
#: The paper's tasks (the roles of :func:`paper_role`) as its tables name them.
PAPER_TASK_NAMES = {"malignancy": "Malignancy", "alnm": "ALNM",
                    **{f"aln_ge_{k}": f"ALNM >= {k}" for k in (2, 3, 4)}}


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def format_cell(values: dict | None, digits: int = 3, repeats: int | None = None) -> str:
    """``mean ± SD (low, high)``; the mean alone when there is no SD (one fit), ``-`` when
    there is no mean. With ``repeats``, a cell defined in fewer of them (a precision with no
    positive call in some repeat) says in how many: ``1.000 (1 of 2 repeats)``."""
    if not values or _nan(values.get("mean")):
        return "-"

    def f(x):
        return f"{x:.{digits}f}"

    n = values.get("n")
    if repeats and not _nan(n) and 0 < int(n) < repeats:
        return f"{format_cell(values, digits)} ({int(n)} of {repeats} repeats)"
    if _nan(values.get("sd")):
        return f(values["mean"])
    low, high = values.get("ci_low"), values.get("ci_high")
    if _nan(low) or _nan(high):
        return f"{f(values['mean'])} ± {f(values['sd'])}"
    return f"{f(values['mean'])} ± {f(values['sd'])} ({f(low)}, {f(high)})"


def variant_name(variant: str) -> str:
    return VARIANT_NAMES.get(variant, variant)


def _values(summary: pd.DataFrame, variant: str, task: str, metric: str, interval: str) -> dict | None:
    rows = summary[(summary["variant"] == variant) & (summary["task"] == task)
                   & (summary["metric"] == metric)]
    if rows.empty:
        return None
    values = rows.iloc[0].to_dict()
    if interval == "mean" and "mean_ci_low" in values:
        values.update(ci_low=values["mean_ci_low"], ci_high=values["mean_ci_high"])
    return values


def _intro(title: str, repeats: int | None, interval: str, threshold: float, paper: bool,
           role_note: str = "") -> list[str]:
    what = ("mean ± SD (mean ± t(0.975, n-1)·SD, the paper's interval)" if interval == "paper"
            else "mean ± SD (95% CI of the mean, mean ± t·SD/√n)")
    lines = [f"# {title}", "",
             f"Cells: {what} over {repeats} repeat(s) per model; a single fit shows its value. "
             f"Image level. A case is called positive when its predicted probability is >= "
             f"{threshold:g} (ACC, SE, Prec, SP, F1); AUC needs no threshold. Each task is "
             f"scored within its cohort."]
    if paper:
        lines += ["", f"`paper` beside a cell: the published figure of {SOURCE} for the same "
                      f"role{role_note}."]
    return lines + [""]


def _rows(summary, tasks, variants, interval, paper_lookup, cohort_of,
          repeats: int | None = None, names: dict | None = None,
          roles: dict | None = None) -> tuple[list, list]:
    """(markdown rows, csv records) for the (task, variant) pairs present in the summary; a
    row is labelled with the task's display name (``names``), and with ``paper_lookup`` the
    record names the paper's task of its role (``roles``) in ``paper_task``."""
    md, records = [], []
    for task in tasks:
        for variant in variants:
            cells = {m: _values(summary, variant, task, m, interval) for m, _ in COLUMNS}
            if all(v is None for v in cells.values()):
                continue
            first = next(v for v in cells.values() if v is not None)
            label = display_name(task, names)
            record = {"task": task, "display_name": label, "model": variant_name(variant),
                      "cohort": cohort_of(first),
                      **{k: None if _nan(first.get(k)) else int(first[k])
                         for k in ("n_images", "positives")}}
            if paper_lookup is not None:
                record["paper_task"] = PAPER_TASK_NAMES.get((roles or {}).get(task), "")
            texts = []
            for metric, heading in COLUMNS:
                text = format_cell(cells[metric], repeats=repeats)
                record[heading] = text
                figure = paper_lookup(task, variant, metric) if paper_lookup else None
                if paper_lookup is not None:
                    record[f"{heading} (paper)"] = format_cell(figure)
                    if figure is not None:
                        text = f"{text}; paper {format_cell(figure)}"
                texts.append(text)
            n = first.get("n_images")
            n_text = "-" if _nan(n) else str(int(n))
            md.append(f"| {label} | {variant_name(variant)} | {record['cohort']} | {n_text} | "
                      + " | ".join(texts) + " |")
            records.append(record)
    return md, records


def _header() -> list[str]:
    return ["| Task | Model | Cohort | n | " + " | ".join(h for _, h in COLUMNS) + " |",
            "|---|---|---|---|" + "---|" * len(COLUMNS)]


def role_note(roles: dict, names: dict | None = None) -> str:
    """The caption's account of which row stands for which of the paper's tasks:
    ``" (our Malignancy as the paper's Malignancy, our BI-RADS 5 as its ALNM)"``."""
    parts = [f"our {display_name(task, names)} as the paper's {PAPER_TASK_NAMES[role]}"
             for task, role in roles.items() if role in PAPER_TASK_NAMES]
    return f" ({', '.join(parts)})" if parts else ""


def paper_role(tasks: list[str], roots: list[str], first_child: str | None):
    """The paper's task for each of ours: the root -> malignancy, its first child -> alnm."""
    roles = {}
    if roots:
        roles[roots[0]] = "malignancy"
    if first_child:
        roles[first_child] = "alnm"
    return roles


def table3(summary: pd.DataFrame, tasks: list[str], roles: dict, repeats: int,
           interval: str = "paper", threshold: float = 0.5, paper: bool = False,
           title: str = "Table 3: the four variants",
           names: dict | None = None) -> tuple[str, pd.DataFrame]:
    """The paper's Table 3 (``(markdown, csv frame)``): a row per task and variant.

    Args:
        summary: ``summary.csv`` of an experiment (variant, task, metric, mean, sd, ci_*,
            cohort, n_images, positives).
        tasks: the tasks, in order.
        roles: our task -> the paper's (see :func:`paper_role`), for ``paper``.
        repeats: repeats per variant, for the caption.
        interval: ``paper`` or ``mean`` (which interval the cells show).
        threshold: the probability threshold of the threshold metrics, for the caption.
        paper: add the published figure of each cell.
        title: the table's heading.
        names: display names of the rows (the config's, see
            :func:`usmtl.tasks.display_names`; default: derived from the task names).
    """
    variants = [v for v in _PAPER_VARIANT_ORDER if v in set(summary["variant"])] + \
        [v for v in dict.fromkeys(summary["variant"]) if v not in _PAPER_VARIANT_ORDER]
    lookup = (lambda task, variant, metric: paper_figure(3, roles[task], variant, metric)
              if task in roles else None) if paper else None
    md, records = _rows(summary, tasks, variants, interval, lookup, lambda v: v.get("cohort", "all"),
                        repeats, names, roles)
    note = role_note(roles, names)
    text = "\n".join(_intro(title, repeats, interval, threshold, paper, note) + _header() + md) + "\n"
    return text, pd.DataFrame(records)


def table2(summary: pd.DataFrame, radiomics: pd.DataFrame, delong: dict, tasks: list[str],
           roles: dict, repeats: int, interval: str = "paper", threshold: float = 0.5,
           paper: bool = False, cnn_variant: str = "multitask-hl",
           names: dict | None = None) -> tuple[str, pd.DataFrame]:
    """The paper's Table 2: the CNN against radiomics per task, with DeLong's p between the
    CNN's repeat-averaged scores and the radiomics scores on the same test images
    (``delong``: task -> p)."""
    both = pd.concat([summary[summary["variant"] == cnn_variant], radiomics], ignore_index=True)
    lookup = (lambda task, variant, metric: paper_figure(2, roles[task], variant, metric)
              if task in roles else None) if paper else None
    md, records = _rows(both, tasks, ["radiomics", cnn_variant], interval, lookup,
                        lambda v: v.get("cohort", "all"), names=names, roles=roles)
    lines = _intro("Table 2: CNN against the radiomics baseline", repeats, interval, threshold,
                   paper, role_note(roles, names)) + _header() + md + [
        "", "| Task | DeLong p (AUC, CNN vs radiomics) |", "|---|---|"]
    for task in tasks:
        p = delong.get(task)
        lines.append(f"| {display_name(task, names)} | {'-' if _nan(p) else f'{p:.3g}'} |")
        for record in records:
            if record["task"] == task:
                record["delong_p"] = p
    return "\n".join(lines) + "\n", pd.DataFrame(records)


def table4(burden: pd.DataFrame, column: str, repeats: int, interval: str = "paper",
           threshold: float = 0.5, paper: bool = False,
           name: str | None = None) -> tuple[str, pd.DataFrame]:
    """The paper's Table 4 from ``burden.csv`` (a row per threshold and model). Threshold
    k = 1 is the paper's ALNM (Table 2), k >= 2 its ``aln_ge_k``.

    A row is labelled ``<name> >= k`` (``name``: the burden child's display name, as the
    paper's "ALNM >= 2"; default ``column``); the CSV's ``task`` is the threshold's task in
    ``burden.csv`` (``alnm_ge2``)."""
    def figure(k, variant, metric):
        return paper_figure(2, "alnm", variant, metric) if k == 1 else \
            paper_figure(4, f"aln_ge_{k}", variant, metric)

    md, records = [], []
    for k, group in burden.groupby("threshold", sort=True):
        label = f"{name or column} >= {int(k)}"
        task = group["task"].iloc[0] if "task" in group else label
        summary = group.assign(task=task)
        lookup = (lambda _t, variant, metric, k=int(k): figure(k, variant, metric)) if paper else None
        variants = [v for v in _PAPER_VARIANT_ORDER if v in set(group["variant"])]
        m, r = _rows(summary, [task], variants, interval, lookup, lambda v: v.get("cohort", "all"),
                     names={task: label}, roles={task: "alnm" if k == 1 else f"aln_ge_{int(k)}"})
        md += m
        records += r
    title = f"Table 4: nodal burden ({column} >= k as separate tasks" + \
        (f", a row {name} >= k)" if name else ")")
    intro = _intro(title, repeats, interval, threshold, paper,
                   " (k = 1 is the paper's ALNM of Table 2)")
    return "\n".join(intro + _header() + md) + "\n", pd.DataFrame(records)
