"""The data of a run, checked before anything is written: manifest, task labels, split.

``usmtl fit``, ``usmtl radiomics fit`` and the experiment drivers all start here, so a CNN
and the radiomics baseline see the same patients on the same side of the split.

One pre-check for every command: :func:`require_usable` runs ``usmtl check``'s checks
(structure, label consistency, files) and decodes every image once with
:func:`usmtl.data.io.read_image`, checking its box inside it; it raises one
:class:`~usmtl.errors.ManifestError` listing every problem by manifest line, so that no
undecodable file or impossible row reaches ``tf.data``. What is suspicious but legitimate
is a warning with counts, never an error (one rule each, see :mod:`usmtl.data.manifest`):
duplicated rows (same image, same box) are kept; labels spelled ``yes``/``true``/``no``/
``false`` are read as 1/0; labels outside a task's cohort are ignored.

:func:`prepare_data` also finds the tasks whose known training labels hold one class
(``PreparedData.one_class``); what to do with them is the caller's (``usmtl fit`` refuses
a root task and leaves a child task out of its best-checkpoint score, the radiomics
baseline skips them).

Example:
    >>> from usmtl.config import load_config
    >>> from usmtl.data.prepare import prepare_data
    >>> data = prepare_data(load_config("configs/quickstart.yaml"),
    ...                     "demo/manifest.csv")  # doctest: +SKIP
    >>> sorted(set(data.row_split))  # doctest: +SKIP
    ['test', 'train', 'val']
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Callable, Iterable

import numpy as np

from usmtl.data.manifest import (Manifest, _parse_manifest, consistency_problems, file_problems,
                                 read_manifest, row_warnings)
from usmtl.data.splits import load_split, make_split, rows_in_split, split_from_manifest
from usmtl.errors import ManifestError, UsmtlError
from usmtl.tasks import Task, TaskGraph, label_table, task_labels


def print_warning(text: str) -> None:
    """``warning: text`` on stderr (how the pre-check reports warnings by default)."""
    print(f"warning: {text}", file=sys.stderr, flush=True)


def require_usable(manifest: "str | os.PathLike | Manifest", rows: Iterable[int] | None = None,
                   graph: TaskGraph | None = None, progress: bool | None = None,
                   warn: Callable[[str], None] | None = print_warning) -> Manifest:
    """Check that a manifest's rows can be used as they are; the pre-check of every command.

    The checks of ``usmtl check`` (:func:`usmtl.data.manifest.check_manifest`): structure
    (columns, labels, boxes), consistency (ALNM on a benign mass, ``aln_count`` against
    ``alnm``, a patient in two splits) and files: every image (and mask) is decoded once
    with :func:`usmtl.data.io.read_image` and its box must lie inside it. Images decoded
    before in this process and unchanged since are not decoded again.

    Args:
        manifest: a manifest file, or a :class:`~usmtl.data.manifest.Manifest` already read
            (its structure was checked by :func:`~usmtl.data.manifest.read_manifest`).
        rows: the frame rows to check (row ``i`` is manifest line ``i + 2``); default all.
            Structure is always checked on every row.
        graph: a :class:`~usmtl.tasks.TaskGraph` whose label sources must be readable (a
            column missing or holding values its task cannot read is a problem); it also
            adds warnings about labels outside a task's cohort.
        progress: a tqdm progress bar over the decoding; None: when stderr is a terminal.
        warn: called with each warning (duplicated rows, labels spelled as words, labels
            outside a cohort); default: printed as ``warning: ...`` on stderr; None: silent.

    Returns:
        The :class:`~usmtl.data.manifest.Manifest`, usable.

    Raises:
        ManifestError: the manifest cannot be read at all (missing file or columns, no
            rows), or one error listing every problem found (``.problems``), each naming
            its manifest line: nothing stops at the first problem.
    """
    if isinstance(manifest, Manifest):
        structure: list[str] = []
    else:
        manifest, structure = _parse_manifest(os.fspath(manifest))
    rows = range(len(manifest)) if rows is None else sorted(set(int(i) for i in rows))
    if progress is None:
        progress = sys.stderr.isatty()
    problems = structure + file_problems(manifest, rows, progress=progress) \
        + consistency_problems(manifest, rows) + _label_problems(manifest, rows, graph)
    if problems:
        name = os.path.basename(manifest.path)
        raise ManifestError(f"{manifest.path}: {len(problems)} problem(s); nothing was written. "
                            f"Fix the rows below ('usmtl check {name}' gives the same report)",
                            problems)
    if warn is not None:
        for warning in row_warnings(manifest, rows, graph):
            warn(warning)
    return manifest


def _label_problems(manifest: Manifest, rows, graph: TaskGraph | None) -> list[str]:
    """The labels of ``graph``'s tasks that cannot be read, in ``rows``."""
    if graph is None:
        return []
    wanted = {manifest.where(i) for i in rows}
    problems: list[str] = []
    for task in graph.tasks:
        for source in [task] + ([Task(f"{task.name} (cohort)", task.cohort)] if task.cohort else []):
            try:
                task_labels(manifest, source)
            except ManifestError as exc:
                if not exc.problems:  # a missing column
                    problems.append(f"task {task.name!r}: {str(exc).split(': ', 1)[-1]}")
                problems += [p for p in exc.problems if p.split(": ", 1)[0] in wanted]
    return list(dict.fromkeys(problems))


def _warn_other_manifest(split_file: str, manifest_path: str, warn) -> None:
    """A run's split reused for another manifest is matched by patient id only: say so, since
    two data sets can share ids (P0001...) without sharing patients."""
    import json

    run_file = os.path.join(split_file, "run.json")
    if warn is None or not os.path.isfile(run_file):
        return
    try:
        with open(run_file) as f:
            source = json.load(f).get("manifest")
    except (OSError, ValueError, AttributeError):
        return
    if source and os.path.abspath(source) != os.path.abspath(manifest_path):
        warn(f"the split of {split_file} was made for another manifest ({source}); it is used "
             f"for {manifest_path} by patient id only: check that the ids name the same patients")


@dataclasses.dataclass
class PreparedData:
    manifest: Manifest
    graph: TaskGraph
    labels: dict
    split: dict
    row_split: np.ndarray
    # Tasks whose known training labels hold one class: {task: why} (one_class_tasks).
    one_class: dict = dataclasses.field(default_factory=dict)


def prepare_data(cfg, manifest_path: str, split_file: str | None = None,
                 progress: bool | None = None, warn=print_warning) -> PreparedData:
    """Check the manifest (:func:`require_usable`), derive task labels and the patient split;
    raise on any problem, before anything is written.

    ``cfg``: an :class:`~usmtl.config.ExperimentConfig`. ``split_file``: a split CSV or a run
    directory to reuse; without it the manifest's own ``split`` column, else a new patient
    split from ``cfg.data``. ``progress`` and ``warn``: as for :func:`require_usable`.

    Raises:
        ManifestError: every problem of the manifest (see :func:`require_usable`).
        UsmtlError: a split that leaves no training image, or a task without a known
            training label.
    """
    graph = TaskGraph.from_config(cfg.tasks)
    require_usable(manifest_path, graph=graph, progress=progress, warn=warn)
    manifest = read_manifest(manifest_path)
    labels = label_table(manifest, graph)
    if split_file:
        split = load_split(split_file)
        _warn_other_manifest(split_file, manifest_path, warn)
    else:
        split = split_from_manifest(manifest)
        if split is None:
            stratify = cfg.data.stratify or cfg.tasks[0].label
            strata = task_labels(manifest, Task("stratify", stratify))
            split = make_split(manifest.patient_ids(), strata, cfg.data.test_fraction,
                               cfg.data.val_fraction, cfg.data.split_seed)
    row_split = rows_in_split(manifest, split)
    if manifest.pack is None:  # a pack holds crops: its source manifest was searched
        from usmtl.data import duplicates, leakage

        pairs = duplicates.manifest_pairs(manifest)
        leaks = leakage.duplicate_problems(manifest, row_split, pairs)
        if leaks:
            raise ManifestError(f"{manifest_path}: near-duplicate images; nothing was written",
                                leaks)
        for text in leakage.mixed_label_problems(manifest, pairs) if warn else ():
            warn(text)
    train = row_split == "train"
    if not train.any():
        raise UsmtlError(f"{manifest_path}: the split leaves no training images. "
                         f"Received: {len(manifest)} images, split counts "
                         f"{dict(zip(*np.unique(row_split, return_counts=True)))}")
    for name, values in labels.items():
        if np.isnan(values[train]).all():
            raise UsmtlError(f"Task {name!r} has no known label among the training images; "
                             f"check its label source {graph.by_name[name].label!r}")
    return PreparedData(manifest, graph, labels, split, row_split,
                        one_class_tasks(graph, labels, train))


def one_class_tasks(graph: TaskGraph, labels: dict, train: np.ndarray) -> dict:
    """``{task: why}`` for the tasks whose known labels among the ``train`` rows hold one
    class (``why``: ``all 37 known labels among the training images are 0 (malignant)``)."""
    found = {}
    for name, values in labels.items():
        known = values[train][~np.isnan(values[train])]
        classes = np.unique(known)
        if len(classes) == 1:
            found[name] = (f"all {len(known)} known labels among the training images are "
                           f"{int(classes[0])} ({graph.by_name[name].label})")
    return found
