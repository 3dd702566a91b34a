"""Tasks as a hierarchy, and their labels from a manifest.

A task's ``label`` is either a manifest column of 0/1 values (``malignant``) or a
comparison on one column (``aln_count >= 2``, ``histology == "invasive ductal carcinoma"``).
An empty cell is an unknown label: it contributes nothing to that task's loss.

The paper's hierarchy is ``malignancy -> alnm`` (Li, Guo et al., Front. Physiol. 2022); an
extension chains nodal-burden tasks below it (``alnm -> aln_ge_2 -> ...``). The hierarchical
hinge acts on every parent -> child edge.

A task's *cohort* is the set of images on which it is labelled and scored. The paper labels
and scores ALNM within the malignant masses only: benign masses have no axillary surgery, so
their ALN status is unknown, and they reach the ALNM head only through the label-free hinge.
``cohort: parent_positive`` says so; :func:`label_table` then gives such a task an unknown
label wherever the parent's label is not 1, for training and evaluation alike.

Example:
    >>> from usmtl.config import TaskConfig
    >>> from usmtl.tasks import TaskGraph
    >>> graph = TaskGraph.from_config([TaskConfig("malignancy", "malignant"),
    ...                                TaskConfig("alnm", "alnm", parent="malignancy")])
    >>> graph.edges
    [('malignancy', 'alnm')]
    >>> graph = TaskGraph.from_config([TaskConfig("malignancy", "malignant"),
    ...     TaskConfig("alnm", "alnm", parent="malignancy", cohort="parent_positive")])
    >>> graph.by_name["alnm"].cohort, graph.cohort_text("alnm")
    ('malignant', 'malignant = 1')
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
import re

import numpy as np

from usmtl.errors import ConfigError, ManifestError
from usmtl.labels import parse_binary

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXPRESSION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_ ]*?)\s*(>=|<=|==|!=|>|<)\s*(.+?)\s*$")
_OPERATORS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
              ">": operator.gt, "<": operator.lt}


ALL = "all"
PARENT_POSITIVE = "parent_positive"


@dataclasses.dataclass(frozen=True)
class Task:
    """A head. ``cohort`` is the label source whose value 1 marks the images the task is
    labelled and scored on (``parent_positive`` resolved to the parent's label), or None
    for every image."""

    name: str
    label: str
    parent: str | None = None
    cohort: str | None = None

    @property
    def columns(self) -> list[str]:
        """Manifest columns the task's labels need: its label's and its cohort's."""
        columns = [parse_label(self.label)[0]]
        if self.cohort is not None:
            columns.append(parse_label(self.cohort)[0])
        return columns


class TaskGraph:
    """Tasks in config order, with their parent -> child edges (a forest)."""

    def __init__(self, tasks: list[Task]):
        self.tasks = list(tasks)
        self.by_name = {t.name: t for t in self.tasks}

    @classmethod
    def from_config(cls, task_configs) -> "TaskGraph":
        if not task_configs:
            raise ConfigError("tasks must list at least one task. Received: []")
        tasks = [Task(t.name, t.label, t.parent, getattr(t, "cohort", ALL)) for t in task_configs]
        seen = set()
        for task in tasks:
            if not _NAME.match(task.name):
                raise ConfigError(f"Task names must be identifiers (they name model outputs). "
                                  f"Received: {task.name!r}")
            if task.name in seen:
                raise ConfigError(f"Duplicate task name. Received: {task.name!r}")
            seen.add(task.name)
            parse_label(task.label)
        for task in tasks:
            if task.parent is not None and task.parent not in seen:
                raise ConfigError(f"Task {task.name!r} has an unknown parent; tasks: "
                                  f"{sorted(seen)}. Received: parent={task.parent!r}")
        tasks = [dataclasses.replace(t, cohort=_resolve_cohort(t, tasks)) for t in tasks]
        graph = cls(tasks)
        for task in tasks:  # a cycle would never reach a root
            node, steps = task, 0
            while node.parent is not None:
                node, steps = graph.by_name[node.parent], steps + 1
                if steps > len(tasks):
                    raise ConfigError(f"Task parents form a cycle through {task.name!r}. "
                                      f"Received: {[(t.name, t.parent) for t in tasks]}")
        return graph

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def roots(self) -> list[str]:
        return [t.name for t in self.tasks if t.parent is None]

    @property
    def edges(self) -> list[tuple[str, str]]:
        """(parent, child) pairs in config order."""
        return [(t.parent, t.name) for t in self.tasks if t.parent is not None]

    def children(self, name: str) -> list[str]:
        return [t.name for t in self.tasks if t.parent == name]

    def cohort_text(self, name: str) -> str:
        """``"all"`` or the cohort as a reader should see it (``"malignant = 1"``)."""
        return cohort_text(self.by_name[name])

    def present(self, columns) -> "TaskGraph":
        """The tasks whose label (and cohort) columns are all among ``columns``."""
        columns = set(columns)
        return TaskGraph([t for t in self.tasks if set(t.columns) <= columns])


# Task-name words read as acronyms in display names.
_ACRONYMS = {"alnm", "aln", "idc", "bm", "roi", "hl"}


def display_name(name: str, names: dict | None = None) -> str:
    """A task's name for figure titles and tables: ``names[name]`` when given (the config's
    ``display_name``), else derived from the name.

    Example:
        >>> display_name("aln_ge_3"), display_name("malignancy"), display_name("alnm")
        ('ALN >= 3', 'Malignancy', 'ALNM')
        >>> display_name("alnm", {"alnm": "Axillary metastasis"})
        'Axillary metastasis'
    """
    if names and names.get(name):
        return names[name]
    words = name.split("_")
    out = []
    for i, word in enumerate(words):
        if word == "ge" and i + 1 < len(words):
            out.append(">=")
        elif word.lower() in _ACRONYMS:
            out.append(word.upper())
        else:
            out.append(word)
    text = " ".join(out)
    return text[:1].upper() + text[1:]


def display_edge(edge: str, names: dict | None = None) -> str:
    """A ``parent>child`` edge key with display names: ``"Malignancy > ALNM"``."""
    return " > ".join(display_name(part, names) for part in edge.split(">"))


def display_names(tasks) -> dict:
    """``{name: display name}`` of a config's :class:`~usmtl.config.TaskConfig` list."""
    return {t.name: display_name(t.name, {t.name: getattr(t, "display_name", None)})
            for t in tasks}


def cohort_text(task: Task) -> str:
    return ALL if task.cohort is None else f"{task.cohort} = 1"


def _resolve_cohort(task: Task, tasks: list[Task]) -> str | None:
    """The cohort as a label source (None: every image); ``parent_positive`` becomes the
    parent's label."""
    cohort = task.cohort
    if not isinstance(cohort, str) or not cohort.strip():
        raise ConfigError(f"Task {task.name!r}: cohort must be 'all', 'parent_positive' or a label "
                          f"source such as 'malignant'. Received: cohort={cohort!r}")
    cohort = cohort.strip()
    if cohort == ALL:
        return None
    if cohort == PARENT_POSITIVE:
        if task.parent is None:
            raise ConfigError(f"Task {task.name!r} has cohort 'parent_positive' but no parent. "
                              f"Received: parent=None")
        parent = next((t for t in tasks if t.name == task.parent), None)
        if parent is None:  # reported as an unknown parent by the caller
            return None
        return parent.label
    parse_label(cohort)
    return cohort


def parse_label(text: str):
    """Split a label source into ``(column, op, value)``; a bare column gives op None."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"A task label must be a column name or 'column OP value'. Received: {text!r}")
    match = _EXPRESSION.match(text)
    if match is None:
        return text.strip(), None, None
    column, op, value = match.groups()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return column, op, value[1:-1]
    try:
        return column, op, float(value)
    except ValueError:
        return column, op, value


def task_labels(manifest, task: Task) -> np.ndarray:
    """Float labels (1.0, 0.0, NaN = unknown) of ``task`` for every manifest row."""
    column, op, value = parse_label(task.label)
    cells = manifest.column(column).astype(str).str.strip().to_numpy()
    labels = np.full(len(cells), np.nan)
    problems = []
    for i, cell in enumerate(cells):
        if cell == "" or cell.lower() in ("nan", "na", "none"):
            continue
        try:
            if op is None:
                labels[i] = parse_binary(cell)
            elif isinstance(value, float):
                number = float(cell)
                labels[i] = float(_OPERATORS[op](number, value)) if not math.isnan(number) else np.nan
            else:
                labels[i] = float(_OPERATORS[op](cell, value))
        except (ValueError, TypeError):
            expected = "0, 1 or empty" if op is None else "a number or empty"
            problems.append(f"{manifest.where(i)}: task {task.name!r} reads {column!r}, which must "
                            f"be {expected}. Received: {cell!r}")
    if problems:
        raise ManifestError(f"Labels of task {task.name!r} ({task.label!r}) cannot be read", problems)
    return labels


def label_table(manifest, graph: TaskGraph) -> dict[str, np.ndarray]:
    """``{task name: labels}`` for every task of ``graph``, each restricted to its cohort:
    outside it (cohort label 0 or unknown) a label is unknown (NaN)."""
    table = {}
    for task in graph.tasks:
        labels = task_labels(manifest, task)
        if task.cohort is not None:
            inside = cohort_mask(manifest, task)
            labels = np.where(inside, labels, np.nan)
        table[task.name] = labels
    return table


def cohort_mask(manifest, task: Task) -> np.ndarray:
    """True for the rows in ``task``'s cohort (all rows when it has none)."""
    if task.cohort is None:
        return np.ones(len(manifest), bool)
    return task_labels(manifest, Task(f"{task.name} (cohort)", task.cohort)) == 1


def cohort_warnings(manifest, graph: TaskGraph) -> list[str]:
    """One line per task with a cohort whose label is filled outside that cohort (hospital
    exports often write ALNM 0 on benign masses): those labels are ignored, not errors."""
    warnings = []
    for task in graph.tasks:
        if task.cohort is None or not all(manifest.has_column(c) for c in task.columns):
            continue
        try:
            labels = task_labels(manifest, task)
            outside = ~cohort_mask(manifest, task) & ~np.isnan(labels)
        except ManifestError:  # unreadable labels are check_manifest's problems, not warnings
            continue
        if outside.any():
            lines = [manifest.line(i) for i in np.flatnonzero(outside)]
            shown = ", ".join(str(n) for n in lines[:10]) + (", ..." if len(lines) > 10 else "")
            warnings.append(f"{os.path.basename(manifest.path)}: task {task.name!r} is labelled on "
                            f"{len(lines)} row(s) outside its cohort ({cohort_text(task)}); those "
                            f"labels are ignored for training and evaluation (lines {shown})")
    return warnings
