"""Task labels read from a manifest, and the task hierarchy."""

import csv

import numpy as np
import pytest

from usmtl.config import TaskConfig, load_config
from usmtl.data.manifest import read_manifest
from usmtl.errors import ConfigError, ManifestError
from usmtl.tasks import Task, TaskGraph, label_table, parse_label, task_labels

HEADER = ["image", "patient_id", "x_min", "y_min", "x_max", "y_max"]


def write_manifest(tmp_path, columns: dict, name="manifest.csv"):
    """A manifest whose extra ``columns`` hold the given cells (images need not exist)."""
    n = len(next(iter(columns.values())))
    path = tmp_path / name
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER + list(columns))
        for i in range(n):
            writer.writerow([f"img_{i}.png", f"p{i}", 1, 2, 11, 12]
                            + [columns[c][i] for c in columns])
    return read_manifest(str(path))


def labels(tmp_path, label, cells, column=None):
    column = column or parse_label(label)[0]
    return task_labels(write_manifest(tmp_path, {column: cells}), Task("t", label))


# ---------------------------------------------------------------------------------------
# Parsing label sources
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("malignant", ("malignant", None, None)),
    ("  malignant  ", ("malignant", None, None)),
    ("aln_count >= 2", ("aln_count", ">=", 2.0)),
    ("aln_count>=2", ("aln_count", ">=", 2.0)),
    ("aln_count > 2.5", ("aln_count", ">", 2.5)),
    ("aln_count <= 0", ("aln_count", "<=", 0.0)),
    ("aln_count < 1", ("aln_count", "<", 1.0)),
    ("x != 1", ("x", "!=", 1.0)),
    ('histology == "invasive ductal carcinoma"',
     ("histology", "==", "invasive ductal carcinoma")),
    ("histology == 'lobular'", ("histology", "==", "lobular")),
    ("histology == lobular", ("histology", "==", "lobular")),
    ('birads == "4"', ("birads", "==", "4")),  # quoted: compared as text
])
def test_parse_label(text, expected):
    assert parse_label(text) == expected


@pytest.mark.parametrize("text", ["", "   ", None, 3])
def test_parse_label_rejects_empty(text):
    with pytest.raises(ConfigError, match="task label"):
        parse_label(text)


# ---------------------------------------------------------------------------------------
# Labels from a manifest
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("label, cells, expected", [
    ("malignant", ["1", "0", "", "1.0", "0.0"], [1, 0, np.nan, 1, 0]),
    ("malignant", ["true", "false", "yes", "no", "NA"], [1, 0, 1, 0, np.nan]),
    ("aln_count >= 2", ["0", "1", "2", "5", ""], [0, 0, 1, 1, np.nan]),
    ("aln_count > 0", ["0", "1", "none", "nan", "3"], [0, 1, np.nan, np.nan, 1]),
    ("aln_count < 1", ["0", "1", "", "3", "0"], [1, 0, np.nan, 0, 1]),
    ('histology == "invasive ductal carcinoma"',
     ["invasive ductal carcinoma", "fibroadenoma", "", " invasive ductal carcinoma ", "cyst"],
     [1, 0, np.nan, 1, 0]),
    ("x != 1", ["1", "0", "2", "", "1.0"], [0, 1, 1, np.nan, 0]),
    ("grade <= 2", ["1", "2", "3", "2.5", "NaN"], [1, 1, 0, 0, np.nan]),
])
def test_task_labels(tmp_path, label, cells, expected):
    np.testing.assert_array_equal(labels(tmp_path, label, cells), np.array(expected, float))


@pytest.mark.parametrize("cells", [["", "", ""], ["nan", "NA", "None"]])
def test_all_unknown(tmp_path, cells):
    out = labels(tmp_path, "aln_count >= 2", cells)
    assert out.shape == (3,) and np.isnan(out).all()


def test_labels_are_float_with_one_value_per_row(tmp_path):
    out = labels(tmp_path, "malignant", ["1"])
    assert out.dtype == np.float64 and out.tolist() == [1.0]


@pytest.mark.parametrize("label, column, cells, bad_lines", [
    ("idc", "idc", ["1", "2", "0"], [3]),
    ("idc", "idc", ["maybe", "0", "yes-ish"], [2, 4]),
    ("nodes >= 2", "nodes", ["1", "3", "many"], [4]),
    ("nodes >= 2", "nodes", ["-", "", "1"], [2]),
])
def test_bad_cells_name_the_line(tmp_path, label, column, cells, bad_lines):
    with pytest.raises(ManifestError) as info:
        labels(tmp_path, label, cells, column=column)
    problems = info.value.problems
    assert len(problems) == len(bad_lines)  # every bad cell, not only the first
    for problem, line in zip(problems, bad_lines):
        assert f"line {line} " in problem
        assert f"img_{line - 2}.png" in problem
        assert "'t'" in problem and repr(column) in problem
    assert label in str(info.value)


def test_unknown_column(tmp_path):
    manifest = write_manifest(tmp_path, {"malignant": ["1", "0"]})
    with pytest.raises(ManifestError, match="no column 'alnm'"):
        task_labels(manifest, Task("alnm", "alnm"))


def test_label_table(tmp_path):
    manifest = write_manifest(tmp_path, {"malignant": ["1", "0", "1"], "alnm": ["1", "0", ""],
                                         "aln_count": ["3", "0", ""]})
    graph = load_config(None, ["tasks=[{name: malignancy, label: malignant}, "
                               "{name: alnm, label: alnm, parent: malignancy}, "
                               "{name: aln_ge_2, label: 'aln_count >= 2', parent: alnm}]"]) \
        .tasks
    table = label_table(manifest, TaskGraph.from_config(graph))
    assert list(table) == ["malignancy", "alnm", "aln_ge_2"]
    np.testing.assert_array_equal(table["malignancy"], [1, 0, 1])
    np.testing.assert_array_equal(table["alnm"], [1, 0, np.nan])
    np.testing.assert_array_equal(table["aln_ge_2"], [1, 0, np.nan])


# ---------------------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------------------


def test_paper_graph():
    graph = TaskGraph.from_config(load_config(None, [
        "tasks=[{name: malignancy, label: malignant}, "
        "{name: alnm, label: alnm, parent: malignancy}, "
        "{name: aln_ge_2, label: 'aln_count >= 2', parent: alnm}, "
        "{name: aln_ge_3, label: 'aln_count >= 3', parent: aln_ge_2}]"]).tasks)
    assert graph.names == ["malignancy", "alnm", "aln_ge_2", "aln_ge_3"]
    assert graph.roots == ["malignancy"]
    assert graph.edges == [("malignancy", "alnm"), ("alnm", "aln_ge_2"),
                           ("aln_ge_2", "aln_ge_3")]
    assert graph.children("malignancy") == ["alnm"]
    assert graph.children("aln_ge_3") == []
    assert graph.children("unknown") == []
    assert graph.by_name["alnm"] == Task("alnm", "alnm", "malignancy")


def test_forest_and_fan_out():
    graph = TaskGraph.from_config([
        TaskConfig("a", "x"), TaskConfig("b", "y"),
        TaskConfig("a1", "x > 1", "a"), TaskConfig("a2", "x > 2", "a"),
        TaskConfig("b1", "y > 1", "b"),
    ])
    assert graph.roots == ["a", "b"]
    assert graph.children("a") == ["a1", "a2"]
    assert graph.edges == [("a", "a1"), ("a", "a2"), ("b", "b1")]


def test_child_listed_before_parent():
    graph = TaskGraph.from_config([TaskConfig("child", "alnm", "root"),
                                   TaskConfig("root", "malignant")])
    assert graph.roots == ["root"]
    assert graph.edges == [("root", "child")]


@pytest.mark.parametrize("tasks, match", [
    ([], "at least one"),
    ([TaskConfig("a", "x"), TaskConfig("a", "y")], "Duplicate"),
    ([TaskConfig("a-b", "x")], "identifiers"),
    ([TaskConfig("", "x")], "identifiers"),
    ([TaskConfig("a", "x", "zz")], "unknown parent"),
    ([TaskConfig("a", "x", "c"), TaskConfig("b", "x", "a"), TaskConfig("c", "x", "b")], "cycle"),
    ([TaskConfig("r", "x"), TaskConfig("a", "x", "b"), TaskConfig("b", "x", "a")], "cycle"),
    ([TaskConfig("a", "")], "task label"),
])
def test_graph_errors(tasks, match):
    with pytest.raises(ConfigError, match=match):
        TaskGraph.from_config(tasks)
