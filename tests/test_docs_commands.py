"""The README and docs/ name only commands and flags that exist, and only files that exist.

Every ``usmtl <command> [<subcommand>] ... --flag`` in README.md and docs/*.md (fenced shell
blocks and inline code) is walked down the click tree of ``usmtl.cli.main``: each command
must exist and each ``--flag`` must be an option of the command it follows. Every relative
Markdown link must point to a file (and a heading, for ``#anchors`` into Markdown) that
exists, and the README stays a front door of at most 400 lines. No subprocess: the click
objects are read directly, so the test takes well under a second.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest

from tests.conftest import REPO

README_MAX_LINES = 400
# Fenced blocks in these languages are not shell: they are not parsed for commands.
NON_SHELL = {"python", "py", "csv", "yaml", "yml", "json", "text", "txt", "markdown", "md"}
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", ">", ">>", "<", "<<", "2>", "2>&1"}
# `usmtl` as a command word: not usmtl.x (a module), usmtl/ (a path) or usmtl_x (a file).
USMTL = re.compile(r"(?:(?<=^)|(?<=[\s/(]))usmtl(?=\s|$)")


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@dataclass
class Snippet:
    """A piece of a document that may hold usmtl invocations."""
    text: str
    line: int
    inline: bool  # inline code: `a|b` lists alternatives; in a fenced block `|` is a pipe


def _strip_comment(line: str) -> str:
    """A shell line without its `# comment` (a `#` outside quotes, at a word's start)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def snippets(text: str) -> list[Snippet]:
    """The shell lines of fenced blocks (continuations joined, prompts and comments removed)
    and the inline code spans of the prose, each with its 1-based line number."""
    out: list[Snippet] = []
    lines = text.splitlines()
    i = 0
    prose: list[tuple[int, str]] = []

    def flush_prose():
        # Inline code may wrap across lines within a paragraph.
        if not prose:
            return
        para = "\n".join(t for _, t in prose)
        starts = [n for n, _ in prose]
        offsets = []
        pos = 0
        for _, t in prose:
            offsets.append(pos)
            pos += len(t) + 1
        for m in re.finditer(r"(`+)(.+?)\1", para, flags=re.S):
            k = max(j for j, off in enumerate(offsets) if off <= m.start())
            out.append(Snippet(m.group(2).replace("\\|", "|").replace("\n", " "),
                               starts[k], inline=True))
        prose.clear()

    while i < len(lines):
        fence = re.match(r"^\s*(```+|~~~+)\s*([\w+-]*)", lines[i])
        if fence:
            flush_prose()
            marker, lang = fence.group(1), fence.group(2).lower()
            i += 1
            pending, pending_line = "", 0
            while i < len(lines) and not lines[i].strip().startswith(marker):
                if lang not in NON_SHELL:
                    line = _strip_comment(lines[i]).rstrip()
                    line = re.sub(r"^\s*(\$|>>>|\.\.\.|%)\s+", "", line) if not pending else line
                    if not pending:
                        pending_line = i + 1
                    if line.endswith("\\"):
                        pending += line[:-1] + " "
                    else:
                        pending += line
                        if not re.match(r"^\s*make\b", pending):
                            out.append(Snippet(pending, pending_line, inline=False))
                        pending = ""
                i += 1
            if pending:
                out.append(Snippet(pending, pending_line, inline=False))
            i += 1
            continue
        if lines[i].strip():
            prose.append((i + 1, lines[i]))
        else:
            flush_prose()
        i += 1
    flush_prose()
    return out


def _unquoted_comparison(text: str) -> str | None:
    """`a>b` or `a<=b` outside quotes: a shell reads it as a redirection, not an argument."""
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "<>" and i > 0 and (text[i - 1].isalnum() or text[i - 1] == "_"):
            word = re.search(r"(\S*)$", text[:i]).group(1)
            if not word.isdigit():  # 2>&1, 1>out: a file-descriptor redirection
                return text[max(0, i - 20):i + 10].strip()
    return None


def _tokens(text: str, inline: bool) -> list[str]:
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&()<>" if inline else ";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote in prose: fall back to plain words
        return text.split()


def _is_placeholder(token: str) -> bool:
    """`<run>` (rewritten as PLACEHOLDER_run), `RUN`, `COMMAND`, `...` or `$VAR`."""
    return token.startswith("PLACEHOLDER_") or token.strip(".") == "" or bool(
        re.fullmatch(r"[A-Z][A-Z0-9_.\-]*", token)) or token.startswith("$")


def _options(command: click.Command) -> dict[str, click.Option]:
    opts: dict[str, click.Option] = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for name in [*param.opts, *param.secondary_opts]:
                opts[name] = param
    return opts


@dataclass
class Invocation:
    """One `usmtl ...` in a document, as resolved against the click tree."""
    where: str
    text: str
    problems: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # the command paths it resolved to


def invocations(text: str, where: str = "<text>", root: click.Command | None = None
                ) -> list[Invocation]:
    """Every usmtl invocation of a Markdown text, each with what does not exist in the CLI.

    Args:
        text: Markdown.
        where: the file's name, for messages.
        root: the click root command (default: ``usmtl.cli.main``).

    Returns:
        One :class:`Invocation` per `usmtl` command word found in shell blocks and inline code.
    """
    if root is None:
        from usmtl.cli import main as root
    found: list[Invocation] = []
    for snip in snippets(text):
        for m in USMTL.finditer(snip.text):
            rest = snip.text[m.end():]
            inv = Invocation(f"{where}:{snip.line}", ("usmtl" + rest).strip())
            found.append(inv)
            # `<run>` is a placeholder, not two redirections: make it a word first.
            rest = re.sub(r"<([A-Za-z][\w.-]*)>", r"PLACEHOLDER_\1", rest)
            if not snip.inline and (bad := _unquoted_comparison(rest)):
                inv.problems.append(f"unquoted < or > (a shell redirection): {bad!r}")
            tokens = _tokens(rest, snip.inline)
            current: list[tuple[str, click.Command]] = [("usmtl", root)]
            i = 0
            while i < len(tokens):
                tok = tokens[i]
                if tok in SEPARATORS or re.fullmatch(r"[;&|()<>]+", tok) or tok == "usmtl":
                    break  # another command starts, or the shell takes over
                if re.match(r"^--?[A-Za-z]", tok):
                    name = tok.split("=", 1)[0]
                    takes_value = False
                    for path, cmd in current:
                        opt = _options(cmd).get(name)
                        if opt is None and name != "--help":
                            inv.problems.append(f"{path}: no option {name}")
                        elif opt is not None and not opt.is_flag and not opt.count:
                            takes_value = True
                    i += 2 if takes_value and "=" not in tok else 1
                    continue
                groups = [(p, c) for p, c in current if isinstance(c, click.Group)]
                if not groups:
                    i += 1  # an argument of a leaf command
                    continue
                if _is_placeholder(tok):
                    break  # `usmtl COMMAND --help`: nothing more to resolve
                nxt = []
                for path, group in groups:
                    for alt in tok.split("|") if snip.inline else [tok]:
                        sub = group.commands.get(alt)
                        if sub is None:
                            inv.problems.append(f"{path}: no command {alt!r}")
                        else:
                            nxt.append((f"{path} {alt}", sub))
                if not nxt:
                    break
                current = nxt
                i += 1
            inv.commands = [path for path, _ in current]
    return found


def all_options(root: click.Command | None = None) -> set[str]:
    """Every option name of every command of the click tree."""
    if root is None:
        from usmtl.cli import main as root
    names = set(_options(root))
    if isinstance(root, click.Group):
        for sub in root.commands.values():
            names |= all_options(sub)
    return names


def bare_flags(text: str, where: str = "<text>", root: click.Command | None = None
               ) -> list[str]:
    """Inline code that starts with a flag (`--jit/--no-jit`, `--format png|pdf`) but names no
    command: each flag must be an option of some usmtl command."""
    known = all_options(root) | {"--help"}
    problems = []
    for snip in snippets(text):
        if snip.inline and snip.text.startswith("--") and not USMTL.search(snip.text):
            for flag in re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", snip.text):
                if flag not in known:
                    problems.append(f"{where}:{snip.line}: no usmtl command has {flag}")
    return problems


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every Markdown link of a file that is not a URL, outside code."""
    links = []
    in_fence = False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if re.match(r"^\s*(```|~~~)", line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        line = re.sub(r"`[^`]*`", "", line)
        for m in re.finditer(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|^\s*\[[^\]]+\]:\s*(\S+)", line):
            target = m.group(1) or m.group(2)
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                links.append((n, target))
    return links


def heading_anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    anchors, seen, in_fence = set(), {}, False
    for line in path.read_text().splitlines():
        if re.match(r"^\s*(```|~~~)", line):
            in_fence = not in_fence
        m = None if in_fence else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def broken_links(path: Path, base: Path = REPO) -> list[str]:
    """Each relative link of `path` whose file, or heading, does not exist, named from `base`."""
    problems = []
    for line, target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{path.relative_to(base)}:{line}: {target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest):
            problems.append(f"{path.relative_to(base)}:{line}: {target} (no such heading)")
    return problems


# -- the documents --------------------------------------------------------------------------


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_and_flag_the_docs_name_exists(path):
    found = invocations(path.read_text(), str(path.relative_to(REPO)))
    problems = [f"{inv.where}: {p}\n    {inv.text[:160]}" for inv in found for p in inv.problems]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_flag_named_alone_exists(path):
    problems = bare_flags(path.read_text(), str(path.relative_to(REPO)))
    assert not problems, "\n".join(problems)


def test_the_docs_name_many_commands():
    # Guards the parser itself: if it stopped finding invocations, the test above would pass.
    from usmtl.cli import main

    found = [inv for p in doc_files() for inv in invocations(p.read_text(), p.name)]
    assert len(found) >= 80, len(found)
    shown = {path for inv in found for path in inv.commands}

    def leaves(cmd, path):
        if not isinstance(cmd, click.Group):
            return [path]
        return [leaf for name, sub in cmd.commands.items()
                for leaf in leaves(sub, f"{path} {name}")]

    missing = set(leaves(main, "usmtl")) - shown
    assert not missing, f"commands the docs never show: {sorted(missing)}"


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(path):
    assert not broken_links(path), "\n".join(broken_links(path))


def test_readme_is_a_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, len(lines)
    text = "\n".join(lines)
    assert "make test" in text  # .ci/run runs the README's test command
    index = REPO / "docs" / "README.md"
    assert index.is_file()
    listed = {t.partition("#")[0] for _, t in relative_links(index)}
    pages = {p.name for p in (REPO / "docs").glob("*.md")} - {"README.md"}
    assert pages <= listed, f"docs pages missing from docs/README.md: {sorted(pages - listed)}"


# -- the parser on made-up text: it finds what is wrong -------------------------------------

FAKE_CASES = [
    ("```bash\nusmtl fit --config paper --manifest m.csv --out r\n```", []),
    ("```bash\nusmtl frobnicate --out r\n```", ["usmtl: no command 'frobnicate'"]),
    ("```bash\nusmtl fit --config paper --epochs 3\n```", ["usmtl fit: no option --epochs"]),
    ("```bash\n$ usmtl fit --config paper \\\n    --nope 1 --out r\n```",
     ["usmtl fit: no option --nope"]),
    ("```bash\nusmtl import busbra DIR --out m.csv --bogus\n```",
     ["usmtl import busbra: no option --bogus"]),
    ("```bash\nusmtl import dicom DIR --out m.csv\n```", ["usmtl import: no command 'dicom'"]),
    ("Run `usmtl evaluate RUN --no-such-flag` now.", ["usmtl evaluate: no option --no-such-flag"]),
    ("Run `usmtl bench pipeline|train|nope`.", ["usmtl bench: no command 'nope'"]),
    ("Run `usmtl bench pipeline|train|predict`.", []),
    ("`usmtl --verbose COMMAND` and `usmtl COMMAND --help`", []),
    ("`usmtl --log FILE fit --bad`", ["usmtl fit: no option --bad"]),
    ("`usmtl evaluate <run> --by <column> --nope`", ["usmtl evaluate: no option --nope"]),
    ("```bash\nusmtl <command> --help\nusmtl radiomics <sub> --help\n```", []),
    ("```bash\nusmtl fit --set \"x>=1\" --out r   # --bogus in a comment\n```", []),
    ("```bash\nusmtl fit --set x>=1 --out r\n```", ["unquoted < or > (a shell redirection)"]),
    ("```bash\nusmtl fit --out r > log.txt 2>&1\n```", []),
    ("```bash\nusmtl fit --out r 2>&1 | usmtl nope\n```", ["usmtl: no command 'nope'"]),
    ("```bash\nmake demo --whatever\nKERAS_BACKEND=jax usmtl bench train --backend jax --zzz\n```",
     ["usmtl bench train: no option --zzz"]),
    ("```bash\npython -m usmtl predict RUN M --split test --nope\n```",
     ["usmtl predict: no option --nope"]),
    ("```python\nimport usmtl\nusmtl.load('r')  # usmtl nothing --x\n```", []),
    ("```bash\nusmtl fit --out r && usmtl evalute r\n```", ["usmtl: no command 'evalute'"]),
    ("See `usmtl.evaluation.stats` and `usmtl/cli.py` and `usmtl_export.json`.", []),
    ("Its `--set tasks.a.loss_weight=0.5` on\n`usmtl tune --child-weights 1,0.5\n--select m --wat`",
     ["usmtl tune: no option --wat"]),
]


@pytest.mark.parametrize("text,expected", FAKE_CASES,
                         ids=[f"case{i}" for i in range(len(FAKE_CASES))])
def test_the_parser_finds_unknown_commands_and_flags(text, expected):
    problems = [p for inv in invocations(text) for p in inv.problems]
    assert len(problems) == len(expected), problems
    assert all(p.startswith(e) for p, e in zip(problems, expected)), problems


def test_a_flag_named_alone_must_exist_somewhere():
    text = "Use `--jit/--no-jit`, `--format png|pdf` or `--turbo`; `-l` is a file suffix."
    assert bare_flags(text) == ["<text>:1: no usmtl command has --turbo"]


def test_the_link_check_finds_broken_links(tmp_path):
    (tmp_path / "a.md").write_text("# Title here\n\n## Sub part\n")
    doc = tmp_path / "b.md"
    doc.write_text("[ok](a.md) [ok](a.md#sub-part) [web](https://x.org/y.md)\n"
                   "[gone](nope.md) [bad anchor](a.md#nothing)\n```\n[in code](zzz.md)\n```\n")
    targets = [t for _, t in relative_links(doc)]
    assert targets == ["a.md", "a.md#sub-part", "nope.md", "a.md#nothing"]
    assert broken_links(doc, base=tmp_path) == ["b.md:2: nope.md (no such file)",
                                                "b.md:2: a.md#nothing (no such heading)"]
