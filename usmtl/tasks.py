"""Tasks as a hierarchy, and their labels from a manifest.

A task's ``label`` is either a manifest column of 0/1 values (``malignant``) or a
comparison on one column (``aln_count >= 2``, ``histology == "invasive ductal carcinoma"``).
An empty cell is an unknown label: it contributes nothing to that task's loss.

The paper's hierarchy is ``malignancy -> alnm``; nodal-burden tasks chain below it
(``alnm -> aln_ge_2 -> aln_ge_3 -> aln_ge_4``). The hierarchical hinge acts on every
parent -> child edge.

Example:
    >>> from usmtl.config import TaskConfig
    >>> from usmtl.tasks import TaskGraph
    >>> graph = TaskGraph.from_config([TaskConfig("malignancy", "malignant"),
    ...                                TaskConfig("alnm", "alnm", parent="malignancy")])
    >>> graph.edges
    [('malignancy', 'alnm')]
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re

import numpy as np

from usmtl.errors import ConfigError, ManifestError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EXPRESSION = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_ ]*?)\s*(>=|<=|==|!=|>|<)\s*(.+?)\s*$")
_OPERATORS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
              ">": operator.gt, "<": operator.lt}


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    label: str
    parent: str | None = None


class TaskGraph:
    """Tasks in config order, with their parent -> child edges (a forest)."""

    def __init__(self, tasks: list[Task]):
        self.tasks = list(tasks)
        self.by_name = {t.name: t for t in self.tasks}

    @classmethod
    def from_config(cls, task_configs) -> "TaskGraph":
        if not task_configs:
            raise ConfigError("tasks must list at least one task. Received: []")
        tasks = [Task(t.name, t.label, t.parent) for t in task_configs]
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
    from usmtl.data.manifest import parse_binary

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
    """``{task name: labels}`` for every task of ``graph``."""
    return {task.name: task_labels(manifest, task) for task in graph.tasks}
