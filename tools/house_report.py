"""The house's measures (issue 25), as a Markdown table: import cycles among usmtl's modules
(lazy, in-function imports included), the largest modules, the longest functions, the
README's length and the number of docs/ pages.

The import graph is read from the source with :mod:`ast`, nothing is imported:

- every ``import`` and ``from ... import`` statement counts, at the top of a module or inside
  a function (a lazy import still ties the two modules together);
- relative imports are resolved against the importing module;
- ``from pkg import name`` imports the submodule ``pkg.name`` when there is one, else ``pkg``;
- ``import a.b.c`` imports ``a.b.c`` only: the parent packages that Python runs first are
  not edges (every submodule would otherwise be in a cycle with its package's
  ``__init__``), but an explicit import of a package (``import usmtl``, ``from usmtl import
  __version__``) is one.

Issue 25 counted its four cycles without the edges to the root package ``usmtl``; the table
gives both counts. tests/test_house.py holds the rules (no cycle, no module over
:data:`MAX_LINES` lines) with the same functions.

Usage::

    python tools/house_report.py [REPO]   # default: the current folder

Example:
    >>> graph = {"p.a": {"p.b"}, "p.b": {"p.a"}, "p.c": {"p.a"}}
    >>> find_cycles(graph)
    [['p.a', 'p.b']]
"""

from __future__ import annotations

import argparse
import ast
import os
import sys

PACKAGE = "usmtl"
MAX_LINES = 600  # the house rule: a module stays under about 600 lines
TOP = 8


def modules(root: str, package: str = PACKAGE) -> dict[str, str]:
    """``{dotted module name: path}`` of every ``.py`` file of ``root/package`` (a package's
    ``__init__.py`` is the package's own name)."""
    found = {}
    for folder, dirs, files in os.walk(os.path.join(root, package)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                if dotted.endswith(".__init__"):
                    dotted = dotted[:-len(".__init__")]
                found[dotted] = path
    return found


def _nearest(name: str, known) -> str | None:
    """``name`` or its nearest enclosing module among ``known`` (None outside them)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def module_imports(name: str, path: str, known) -> set[str]:
    """The modules among ``known`` that the module ``name`` (file ``path``) imports, with the
    rules of the module docstring.

    Raises:
        SyntaxError: ``path`` is not valid Python (its name in the message).
    """
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    is_package = os.path.basename(path) == "__init__.py"
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                targets.add(_nearest(alias.name, known))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                parts = name.split(".") if is_package else name.split(".")[:-1]
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in known else _nearest(base, known))
    targets.discard(None)
    targets.discard(name)
    return targets


def import_graph(root: str, package: str = PACKAGE) -> dict[str, set[str]]:
    """``{module: modules it imports}`` over the modules of ``root/package``."""
    found = modules(root, package)
    return {name: module_imports(name, path, found) for name, path in found.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected components of two modules or
    more (Tarjan's algorithm), each sorted, largest first."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(cycles, key=lambda c: (-len(c), c))


def cycle_path(graph: dict[str, set[str]], component) -> list[str]:
    """One cycle through the first module of ``component`` (a strongly connected component of
    ``graph``), shortest first: ``[a, b, ..., a]``, for a message that names the imports to cut.

    Example:
        >>> cycle_path({"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}}, ["p.a", "p.b", "p.c"])
        ['p.a', 'p.b', 'p.c', 'p.a']
    """
    inside = set(component)
    start = sorted(component)[0]
    previous, frontier = {start: None}, [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w == start:
                    path = [v]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return path[::-1] + [start]
                if w in inside and w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    return [start]


def without_root(graph: dict[str, set[str]], package: str = PACKAGE) -> dict[str, set[str]]:
    """``graph`` without the edges to the root package (how issue 25 counted its cycles)."""
    return {m: {t for t in targets if t != package} for m, targets in graph.items()}


def line_count(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        return len(f.read().splitlines())


def module_lines(root: str, package: str = PACKAGE) -> list[tuple[int, str]]:
    """``(lines, path relative to root)`` of every module, longest first."""
    rows = [(line_count(p), os.path.relpath(p, root)) for p in modules(root, package).values()]
    return sorted(rows, key=lambda r: (-r[0], r[1]))


def function_lengths(root: str, package: str = PACKAGE) -> list[tuple[int, str, str]]:
    """``(lines from def to its last line, qualified name, module path)`` of every function
    and method (nested ones too, named ``outer.<locals>.inner``), longest first."""
    rows = []

    def walk(node, prefix, path):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qualified = prefix + child.name
                rows.append((child.end_lineno - child.lineno + 1, qualified, path))
                walk(child, qualified + ".<locals>.", path)
            elif isinstance(child, ast.ClassDef):
                walk(child, prefix + child.name + ".", path)
            else:
                walk(child, prefix, path)

    for path in modules(root, package).values():
        with open(path, encoding="utf-8") as f:
            walk(ast.parse(f.read(), filename=path), "", os.path.relpath(path, root))
    return sorted(rows, key=lambda r: (-r[0], r[2], r[1]))


def docs_pages(root: str) -> int:
    """Markdown pages under ``root/docs`` (0 without the folder)."""
    count = 0
    for _, _, files in os.walk(os.path.join(root, "docs")):
        count += sum(1 for f in files if f.endswith(".md"))
    return count


def _cycles_text(cycles) -> str:
    if not cycles:
        return "0"
    return f"{len(cycles)} (sizes {', '.join(str(len(c)) for c in cycles)})"


def report(root: str, package: str = PACKAGE, top: int = TOP) -> str:
    """The Markdown table of the house's measures of the checkout at ``root``."""
    graph = import_graph(root, package)
    sizes = module_lines(root, package)
    functions = function_lengths(root, package)
    readme = os.path.join(root, "README.md")
    rows = [("modules, lines in all", f"{len(sizes)}, {sum(n for n, _ in sizes)}"),
            ("import cycles, lazy imports included (root edges ignored, as issue 25 counted)",
             _cycles_text(find_cycles(without_root(graph, package)))),
            (f"import cycles, imports of the root package `{package}` counted too",
             _cycles_text(find_cycles(graph))),
            (f"modules over {MAX_LINES} lines", str(sum(1 for n, _ in sizes if n > MAX_LINES)))]
    rows += [(f"largest module {i}", f"`{path}` {n}") for i, (n, path) in enumerate(sizes[:top], 1)]
    rows += [(f"longest function {i}", f"`{name}` ({path}) {n}")
             for i, (n, name, path) in enumerate(functions[:top], 1)]
    rows += [("README.md lines", str(line_count(readme)) if os.path.isfile(readme) else "none"),
             ("docs/ pages (Markdown)", str(docs_pages(root)))]
    lines = ["| measure | value |", "|---|---|"]
    lines += [f"| {what} | {value} |" for what, value in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", default=".", help="the repository (default: here)")
    parser.add_argument("--top", type=int, default=TOP,
                        help=f"how many modules and functions to list ({TOP})")
    args = parser.parse_args(argv)
    if not os.path.isdir(os.path.join(args.root, PACKAGE)):
        print(f"No {PACKAGE}/ package in {args.root}. Received: {args.root}", file=sys.stderr)
        return 2
    print(report(args.root, top=args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
