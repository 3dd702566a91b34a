"""The command line's error path.

Every command of :mod:`usmtl.cli` is wrapped in :func:`friendly_errors`: a
:class:`~usmtl.errors.UsmtlError` prints as ``Error: ...`` and an ``OSError`` (a read-only or
missing folder, a full disk, a path that is a file) as one message naming the path
(:func:`usmtl.outputs.describe_os_error`); both exit with status 2, without a traceback.
Importing this module imports no TensorFlow.
"""

from __future__ import annotations

import functools
import sys

import click


def friendly_errors(func):
    """Print UsmtlError and OSError as 'Error: ...' and exit 2, instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from usmtl.errors import UsmtlError
        from usmtl.outputs import describe_os_error

        try:
            return func(*args, **kwargs)
        except UsmtlError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:  # the one path for I/O failures: read-only, missing, full
            click.echo(f"Error: {describe_os_error(exc)}", err=True)
            sys.exit(2)

    return wrapper
