"""The house's rules that a test can hold (issue 25): no import cycle among usmtl's modules,
lazy (in-function) imports included, and no module over 600 lines. The graph is read with
``ast`` by tools/house_report.py (its docstring gives the rules); the finder itself is tested
on tiny packages written to tmp_path, so that these tests can fail."""

from pathlib import Path

import pytest

from tools.house_report import (MAX_LINES, cycle_path, find_cycles, import_graph, main,
                                module_lines, report)

REPO = Path(__file__).resolve().parents[1]


def test_no_import_cycle_in_usmtl():
    graph = import_graph(str(REPO))
    cycles = find_cycles(graph)
    assert not cycles, ("Import cycles among usmtl's modules (lazy imports included); move "
                        "what two rooms share down to the lower one:\n"
                        + "\n".join(f"- {len(c)} modules ({', '.join(c)}), e.g. "
                                    f"{' -> '.join(cycle_path(graph, c))}" for c in cycles))


def test_no_module_over_600_lines():
    over = [(n, path) for n, path in module_lines(str(REPO)) if n > MAX_LINES]
    assert not over, (f"Modules over {MAX_LINES} lines (split them, one concept each):\n"
                      + "\n".join(f"- {path}: {n} lines" for n, path in over))


# ---------------------------------------------------------------------------------------
# The finder, on tiny packages
# ---------------------------------------------------------------------------------------

PACKAGES = {
    "a lazy import closes the cycle": (
        {"__init__.py": "", "a.py": "from pkg import b\n",
         "b.py": "def f():\n    import pkg.a\n    return pkg.a\n"},
        [["pkg.a", "pkg.b"]]),
    "relative imports, one inside a method": (
        {"__init__.py": "", "sub/__init__.py": "", "sub/x.py": "from .y import g\n",
         "sub/y.py": "class C:\n    def m(self):\n        from . import x\n        return x\n",
         "sub/z.py": "from ..sub import y\n"},
        [["pkg.sub.x", "pkg.sub.y"]]),
    "a three-module cycle through a name of a module": (
        {"__init__.py": "", "a.py": "from pkg.b import thing\n",
         "b.py": "import pkg.c\nthing = 1\n", "c.py": "def late():\n    from pkg.a import f\n"},
        [["pkg.a", "pkg.b", "pkg.c"]]),
    "an explicit import of the root package is an edge": (
        {"__init__.py": "def load():\n    from pkg.api import load\n    return load\n",
         "api.py": "from pkg import __version__\n"},
        [["pkg", "pkg.api"]]),
    "no cycle: layers point one way": (
        {"__init__.py": "", "ground.py": "import os\n", "middle.py": "from pkg.ground import x\n",
         "top.py": "def f():\n    from pkg import middle\n    import pkg.ground\n"},
        []),
    "no cycle: a package importing its submodule, which Python runs after it": (
        {"__init__.py": "", "c/__init__.py": "from pkg.c.d import f\n",
         "c/d.py": "import json\n\ndef f():\n    return json\n"},
        []),
}


def _write_package(root: Path, files: dict) -> None:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize("case", list(PACKAGES))
def test_the_cycle_finder_on_a_tiny_package(tmp_path, case):
    files, expected = PACKAGES[case]
    _write_package(tmp_path, files)
    graph = import_graph(str(tmp_path), "pkg")
    assert find_cycles(graph) == expected
    for cycle in expected:  # the message's example: a real cycle through those modules
        path = cycle_path(graph, cycle)
        assert path[0] == path[-1] and sorted(set(path)) == cycle
        assert all(b in graph[a] for a, b in zip(path, path[1:]))


def test_the_report_names_the_cycles_and_the_largest_modules(tmp_path, capsys):
    files, _ = PACKAGES["a lazy import closes the cycle"]
    _write_package(tmp_path, files)
    text = report(str(tmp_path), "pkg")
    assert "| import cycles, imports of the root package `pkg` counted too | 1 (sizes 2) |" in text
    assert "| largest module 1 | `pkg/b.py` 3 |" in text
    assert "| longest function 1 | `f` (pkg/b.py) 3 |" in text
    assert "| README.md lines | none |" in text and "| docs/ pages (Markdown) | 0 |" in text
    assert main([str(tmp_path)]) == 2  # no usmtl/ there: refused, named
    assert "No usmtl/ package in" in capsys.readouterr().err
