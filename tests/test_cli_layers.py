"""The command line is the top floor: nothing below ``usmtl/cli/`` imports it or click, at
the top of a module or inside a function; and ``python -m usmtl.cli`` runs it."""

import ast
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
CLI = REPO / "usmtl" / "cli"


def _imported_names(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_no_library_module_imports_the_cli_or_click():
    files = [f for f in sorted((REPO / "usmtl").rglob("*.py")) if CLI not in f.parents]
    assert len(files) > 50
    hits = []
    for file in files:
        for name in _imported_names(file):
            if name == "click" or name.startswith("click.") or name == "usmtl.cli" \
                    or name.startswith("usmtl.cli."):
                hits.append(f"{file.relative_to(REPO)}: {name}")
    assert not hits, "\n".join(hits)


def test_every_cli_module_is_registered_and_python_m_runs_it():
    import usmtl.cli

    registered = set(usmtl.cli.main.commands)
    for module in ("data", "train", "evaluate", "explain", "export", "radiomics", "bench"):
        commands = getattr(usmtl.cli, module).COMMANDS
        assert commands and {c.name for c in commands} <= registered, module
    done = subprocess.run([sys.executable, "-m", "usmtl.cli", "--help"], capture_output=True,
                          text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "Usage: python -m usmtl.cli" in done.stdout and "fit" in done.stdout
