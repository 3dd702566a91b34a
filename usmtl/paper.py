"""The published figures of the paper usmtl reimplements, carried as data.

Source: Li, Guo et al., "Multi-task deep learning for breast ultrasound: malignancy and
axillary lymph-node metastasis", Front. Physiol. 13:882648 (2022), Tables 2, 3 and 4,
transcribed cell by cell into ``usmtl/paper_tables.csv`` (shipped in the wheel): one row per
table x task x variant x metric, with ``mean`` and ``sd`` over the 5 repeats and the printed
95% interval (``ci_low``, ``ci_high``), which is mean ± t(0.975, 4)·SD. Radiomics rows have
a single value in ``mean``. Task and variant names are usmtl's (``single-bm``,
``single-alnm``, ``multitask``, ``multitask-hl``, ``radiomics``; ``alnm`` and
``aln_ge_2..4``). ``usmtl experiment --paper`` prints these beside a table's own cells.

:data:`TEXT_PVALUES` holds the p-values the paper's text gives for Table 3, and
:data:`KNOWN_ERRATA` the places where the paper disagrees with itself.

Example:
    >>> from usmtl.paper import paper_figure
    >>> paper_figure(3, "alnm", "multitask-hl", "auc")
    {'mean': 0.836, 'sd': 0.011, 'ci_low': 0.805, 'ci_high': 0.866}
    >>> paper_figure(2, "malignancy", "radiomics", "auc")["mean"]
    0.848
    >>> paper_figure(3, "birads5", "multitask", "auc") is None
    True
"""

from __future__ import annotations

import csv
import functools
import math
import os

SOURCE = "Li, Guo et al., Front. Physiol. 13:882648 (2022)"
_FILE = os.path.join(os.path.dirname(__file__), "paper_tables.csv")

#: The p-values of the paper's text (Student's unpaired t-test, n = 5 per variant, on AUC).
TEXT_PVALUES = (
    {"task": "malignancy", "a": "multitask", "b": "single-bm", "p": 0.379},
    {"task": "alnm", "a": "multitask", "b": "single-alnm", "p": 0.597},
    {"task": "alnm", "a": "multitask-hl", "b": "multitask", "p": 0.009},
)

#: Where the paper disagrees with itself (checked by tests/test_stats.py's table3 tests).
KNOWN_ERRATA = (
    "Table 4, ALNM >= 2, Multi-Task + HL specificity printed '0.63 ± 0.291 (0.549, 0.710)': "
    "the interval implies SD 0.029.",
    "Tables 2 and 3, ALNM, Multi-Task + HL accuracy printed '0.782 ± 0.010 (0.753, 0.808)': "
    "the interval is centred on 0.7805; no mean and SD that round to the printed ones give "
    "both printed bounds (mean ± t·SD gives 0.754-0.810).",
    "Text: 'Multi-Task showed no significant difference from Single-BM (0.820 vs. 0.817)' "
    "compares Single-ALNM with Multi-Task on the ALNM task.",
    "Text: p = 0.009 for Multi-Task + HL vs Multi-Task on ALNM AUC; the printed means and SDs "
    "give 0.0116, and their rounding allows 0.0068-0.0190.",
)


def _number(text: str) -> float:
    return float(text) if text.strip() else math.nan


@functools.lru_cache(maxsize=1)
def paper_rows() -> tuple:
    """Every cell of the paper's Tables 2-4: dicts with ``table`` (int), ``task``,
    ``variant``, ``metric``, ``mean``, ``sd``, ``ci_low``, ``ci_high`` (NaN where not
    printed)."""
    with open(_FILE, newline="") as f:
        return tuple({"table": int(r["table"]), "task": r["task"], "variant": r["variant"],
                      "metric": r["metric"],
                      **{k: _number(r[k]) for k in ("mean", "sd", "ci_low", "ci_high")}}
                     for r in csv.DictReader(f))


def paper_figure(table: int, task: str, variant: str, metric: str) -> dict | None:
    """``{"mean", "sd", "ci_low", "ci_high"}`` of one printed cell (NaN where the paper
    prints none: radiomics has a single value), or None when the paper has no such cell."""
    for r in paper_rows():
        if (r["table"], r["task"], r["variant"], r["metric"]) == (table, task, variant, metric):
            return {k: r[k] for k in ("mean", "sd", "ci_low", "ci_high")}
    return None
