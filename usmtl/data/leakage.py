"""Near-duplicate images as problems: a copy across the split, and copies that disagree.

The same picture under two patients (listed twice, or a byte-identical or re-encoded copy
under another name) lands on both sides of a split if nothing joins them, and every score on
that split is then optimistic; near-duplicates across patients whose labels differ (a benign
image and its copy labelled malignant) teach the model both answers. ``usmtl fit`` refuses
both before anything is written (:func:`duplicate_problems` in
:func:`usmtl.data.prepare.prepare_data`), and ``usmtl check`` reports the second as a
problem. The way out of a copy across the split is ``usmtl check MANIFEST --group-duplicates
GROUPED.csv``, which gives near-duplicates one patient id, then a fit on GROUPED.csv.
The search itself is :mod:`usmtl.data.duplicates` (pHash, 56 of 256 bits).
"""

from __future__ import annotations

import math
import os

from usmtl.data import duplicates as dup

GROUP_HINT = ("give near-duplicates one patient id with 'usmtl check {name} --group-duplicates "
              "grouped.csv' and fit on grouped.csv (without --split-file: the ids changed), or "
              "remove the copies")


def duplicate_problems(manifest, row_split=None, pairs=None,
                       max_distance: int = dup.DEFAULT_MAX_DISTANCE) -> list[str]:
    """Near-duplicate pairs across splits and mixed-label groups of ``manifest``, one line
    each, naming manifest lines (empty when there are none).

    Args:
        manifest: a :class:`~usmtl.data.manifest.Manifest`.
        row_split: each row's split name (None: only the mixed labels are judged).
        pairs: near-duplicate pairs already found (:func:`usmtl.data.duplicates.manifest_pairs`).
        max_distance: the pHash distance of a pair, when ``pairs`` is None.

    Returns:
        Problem lines; the first across-split line carries the way out.
    """
    if pairs is None:
        pairs = dup.manifest_pairs(manifest, max_distance)
    problems = mixed_label_problems(manifest, pairs)
    if row_split is None or not pairs:
        return problems
    report = dup.duplicate_report(manifest, splits=list(row_split), pairs=pairs)
    leaks = report[report["across_splits"]]
    if len(leaks):
        name = os.path.basename(manifest.path)
        problems.insert(0, f"{len(leaks)} near-duplicate image pair(s) lie across the split "
                           f"(the same picture in training and in evaluation): "
                           + GROUP_HINT.format(name=name))
        problems[1:1] = dup.format_pairs(leaks, limit=10, kinds=(dup.ACROSS_SPLITS,))
    return problems


def mixed_label_problems(manifest, pairs) -> list[str]:
    """Groups of near-duplicates spanning several patients whose known labels differ, by
    line (a group within one patient may be several lesions of one image)."""
    from usmtl.data.manifest import BINARY_LABEL_COLUMNS, COUNT_LABEL_COLUMNS, parse_binary, \
        parse_count

    patients = manifest.patient_ids()
    problems = []
    for group in dup.duplicate_groups(pairs, len(manifest)):
        if len(set(patients[group])) < 2:
            continue
        for column, parse in [(c, parse_binary) for c in BINARY_LABEL_COLUMNS] + \
                             [(c, parse_count) for c in COUNT_LABEL_COLUMNS]:
            if not manifest.has_column(column):
                continue
            values = {}
            for i in group:
                try:
                    value = parse(manifest.frame[column].iloc[i])
                except ValueError:
                    continue  # reported as a bad label elsewhere
                if not math.isnan(value):
                    values.setdefault(value, []).append(manifest.line(i))
            if len(values) > 1:
                where = "; ".join(f"{_text(v)} at line(s) {', '.join(map(str, lines))}"
                                  for v, lines in sorted(values.items()))
                problems.append(f"near-duplicate images of patients "
                                f"{', '.join(sorted(set(patients[group])))} mix labels of "
                                f"{column!r}: {where}; fix the labels or remove the copy. "
                                f"Received: {len(group)} images")
    return problems


def _text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)

