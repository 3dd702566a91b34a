"""Output paths checked before the work, and the one message for an I/O failure.

A command that writes a file or a folder checks its path first (:func:`require_output_file`,
:func:`require_output_dir`): a missing or unwritable folder, a folder where a file is
wanted (or the reverse), or an output that is one of the command's own inputs is refused
before anything is computed. What fails later (a disk that fills, a folder removed meanwhile)
reaches the user through :func:`describe_os_error`, the CLI's one error path for ``OSError``.
Every file itself is written whole or not at all by :mod:`usmtl.atomic`. Ground floor: it
imports nothing of the package but its errors.

Example:
    >>> from usmtl.outputs import require_output_file
    >>> require_output_file("/nonexistent-folder/p.csv")
    Traceback (most recent call last):
    ...
    usmtl.errors.UsmtlError: --out /nonexistent-folder/p.csv: its folder /nonexistent-folder does not exist; create it first, or choose another path. Received: /nonexistent-folder/p.csv
"""

from __future__ import annotations

import os

from usmtl.errors import UsmtlError


def _same(a: str, b: str) -> bool:
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def require_output_file(path: str, inputs=(), option: str = "--out") -> None:
    """Refuse an output file that cannot be written, before any work.

    Args:
        path: the file to write (it may exist: it is replaced whole).
        inputs: the command's input paths; ``path`` must be none of them.
        option: how the message names the path.

    Raises:
        UsmtlError: ``path`` is an input, a folder, or in a folder that is missing, not a
            folder, or not writable.
    """
    path = os.fspath(path)
    for given in inputs:
        if given and _same(path, os.fspath(given)):
            raise UsmtlError(f"{option} {path} is an input of this command: writing it would "
                             f"destroy the input; choose another file. Received: {path}")
    if os.path.isdir(path):
        raise UsmtlError(f"{option} {path} is a folder; name a file in it. Received: {path}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        what = "is a file, not a folder" if os.path.exists(folder) else "does not exist"
        raise UsmtlError(f"{option} {path}: its folder {folder} {what}; create it first, or "
                         f"choose another path. Received: {path}")
    if not os.access(folder, os.W_OK):
        raise UsmtlError(f"{option} {path}: its folder {folder} is not writable. "
                         f"Received: {path}")


def require_output_dir(path: str, option: str = "--out") -> None:
    """Refuse an output folder that cannot be made or written, before any work.

    Raises:
        UsmtlError: ``path`` is a file, or its nearest existing parent is a file or is not
            writable.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsmtlError(f"{option} {path} is a file, not a folder. Received: {path}")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsmtlError(f"{option} {path}: {existing} is a file, not a folder. "
                         f"Received: {path}")
    if not os.access(existing, os.W_OK):
        raise UsmtlError(f"{option} {path}: {existing} is not writable. Received: {path}")


def describe_os_error(exc: OSError) -> str:
    """A user's message for an I/O failure: the path, what went wrong, what to do."""
    path = exc.filename if exc.filename is not None else ""
    reason = exc.strerror or str(exc)
    hint = {28: " (the disk is full: free space and run the command again)",
            13: " (no permission: choose another path)",
            30: " (a read-only file system: choose another path)"}.get(exc.errno or 0, "")
    return f"cannot read or write {path or 'a file'}: {reason}{hint}. Received: {path or exc}"
