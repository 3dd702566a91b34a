"""Options shared by several commands, defined once: ``--format`` and ``--dpi`` of every
command that draws (:mod:`usmtl.evaluation.figures` reads what they set), and ``usmtl
--log FILE`` with the console's routing of third-party output (:mod:`usmtl.console`).
Importing this module imports no matplotlib and no TensorFlow."""

from __future__ import annotations

import functools
import os

import click

from usmtl.evaluation.figures import DPI_ENV, FORMATS, FORMATS_ENV


def figure_options(command):
    """Add ``--format png|pdf|svg`` (repeatable; default PNG plus PDF; PNG always, as the
    reports embed it) and ``--dpi`` (default 300) to a click command."""

    @functools.wraps(command)
    def wrapper(*args, figure_formats=(), figure_dpi=None, **kwargs):
        if figure_formats:
            os.environ[FORMATS_ENV] = ",".join(figure_formats)
        if figure_dpi is not None:
            os.environ[DPI_ENV] = str(figure_dpi)
        return command(*args, **kwargs)

    wrapper = click.option("--dpi", "figure_dpi", type=click.IntRange(50, 1200),
                           help="Resolution of the figures' PNG (default: 300).")(wrapper)
    return click.option("--format", "figure_formats", multiple=True,
                        type=click.Choice(FORMATS),
                        help="Figure format, repeatable (default: png and pdf; the PNG is "
                             "always written, the reports embed it).")(wrapper)


def console_options(group):
    """Add ``--log FILE`` to the ``usmtl`` group; before any command runs, route
    third-party Python logging and warnings to that file (or nowhere)."""

    @functools.wraps(group)
    def wrapper(*args, log_path=None, **kwargs):
        result = group(*args, **kwargs)  # --verbose sets USMTL_LOG_LEVEL first
        from usmtl.console import quiet_python_loggers, route_warnings, said_once, start_log

        click.get_current_context().with_resource(said_once())  # the whole command
        if log_path:
            start_log(log_path)
        quiet_python_loggers()
        route_warnings()
        return result

    return click.option("--log", "log_path", type=click.Path(dir_okay=False),
                        help="Also write everything to this file: the console, the full "
                             "per-epoch metrics, third-party output.")(wrapper)


class WholeSentenceGroup(click.Group):
    """A command group whose ``--help`` lists each command with the whole first sentence of
    its help, wrapped, where click cuts it at the terminal's width with "..."."""

    group_class = type  # subgroups (import, bench, radiomics) list their commands alike

    def format_commands(self, ctx, formatter):
        import re

        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            text = (command.short_help or command.help or "").split("\n\n")[0]
            text = " ".join(text.split())
            rows.append((name, re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
