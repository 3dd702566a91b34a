"""Options shared by several commands, defined once: ``--config`` and ``--set``,
``--backend``, ``--trust-model``, ``--format`` and ``--dpi`` of every command that draws
(:mod:`usmtl.evaluation.figures` reads what they set), ``usmtl --log FILE`` with the
console's routing of third-party output (:mod:`usmtl.console`), and the group class whose
``--help`` lists whole sentences. Importing this module imports no matplotlib and no
TensorFlow."""

from __future__ import annotations

import functools
import os

import click

from usmtl.evaluation.figures import DPI_ENV, FORMATS, FORMATS_ENV

# Preset names (usmtl.presets): shipped inside the package, so they work from a wheel too.
DEFAULT_CONFIG = "quickstart"
PAPER_CONFIG = "paper"

config_option = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False),
    help="Experiment YAML, or a preset name (usmtl presets; default: quickstart).")
set_option = click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE",
    help="Override a config value, e.g. --set train.epochs=3 (repeatable).")
trust_option = click.option(
    "--trust-model", is_flag=True,
    help="Load a SavedModel even if its graph reads or writes files or runs Python: only for a "
         "model from a sender you trust (a model is code; see docs/deployment.md).")


def backend_option(command):
    """--backend: the Keras backend of this command (usmtl.backend), chosen before Keras
    is imported; the command itself does not see the option."""
    @functools.wraps(command)
    def wrapper(*args, backend=None, **kwargs):
        from usmtl.backend import use_backend

        use_backend(backend)
        return command(*args, **kwargs)

    return click.option(
        "--backend", type=click.Choice(["tensorflow", "jax"]),
        help="Keras backend (default: KERAS_BACKEND, else tensorflow). jax trains without "
             "TensorFlow: NumPy batches, Keras' fit, XLA (see docs/gpu-jax.md).")(wrapper)


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
