"""Options shared by several commands, defined once: ``usmtl --log FILE`` with the
console's routing of third-party output (:mod:`usmtl.console`).
Importing this module imports no matplotlib and no TensorFlow."""

from __future__ import annotations

import functools

import click


def console_options(group):
    """Add ``--log FILE`` to the ``usmtl`` group; before any command runs, route
    third-party Python logging and warnings to that file (or nowhere)."""

    @functools.wraps(group)
    def wrapper(*args, log_path=None, **kwargs):
        result = group(*args, **kwargs)  # --verbose sets USMTL_LOG_LEVEL first
        from usmtl.console import quiet_python_loggers, route_warnings, start_log

        if log_path:
            start_log(log_path)
        quiet_python_loggers()
        route_warnings()
        return result

    return click.option("--log", "log_path", type=click.Path(dir_okay=False),
                        help="Also write everything to this file: the console, the full "
                             "per-epoch metrics, third-party output.")(wrapper)
