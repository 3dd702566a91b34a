"""Atomic files: the package's one writer of JSON, text and CSV (and reader of JSON).

Each write goes to a temporary file in the same folder, is flushed and synced, then renamed
over the target: a reader never sees half a file, and a failed write leaves the previous file
as it was and no temporary behind. Files get the permissions a plain ``open`` would give.
Ground floor: it imports nothing of the package but its errors.

Example:
    >>> import os, tempfile
    >>> from usmtl.atomic import read_json, write_json_atomic
    >>> path = os.path.join(tempfile.mkdtemp(), "a.json")
    >>> write_json_atomic(path, {"auc": 0.9})
    >>> read_json(path)
    {'auc': 0.9}
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets

from usmtl.errors import UsmtlError

__all__ = ["json_default", "write_json_atomic", "write_text_atomic", "write_csv_atomic",
           "read_json"]




def json_default(value):
    """JSON for what ``json`` cannot write: numpy scalars and arrays, then ``float(value)``,
    else ``str(value)``."""
    for method in ("tolist", "item"):  # numpy arrays and scalars
        if hasattr(value, method):
            return getattr(value, method)()
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _temporary_beside(path: str) -> tuple[int, str]:
    """A new file ``.<name>.<random>.tmp`` in the folder of ``path``, with the permissions a
    plain ``open`` would give (``tempfile.mkstemp``'s are owner-only)."""
    folder, name = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue


def _write_atomic(path: str, write, fsync: bool = True, binary: bool = False) -> None:
    """``write(file)`` into a temporary file beside ``path`` (text, or bytes with
    ``binary``), then rename it over ``path``.

    On any failure the temporary file is removed, ``path`` is left as it was, and a
    :class:`UsmtlError` naming ``path`` is raised.
    """
    path = os.fspath(path)
    tmp = None
    try:
        fd, tmp = _temporary_beside(path)
        opened = os.fdopen(fd, "wb") if binary else \
            os.fdopen(fd, "w", encoding="utf-8", newline="")
        with opened as f:
            write(f)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except Exception as exc:
        raise UsmtlError(f"Could not write {path}: {type(exc).__name__}: {exc}") from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.remove(tmp)


def write_json_atomic(path: str, data, indent: int | None = 2, fsync: bool = True) -> None:
    """Write ``data`` as JSON to ``path`` atomically (see the module docstring).

    Numpy values are written as plain numbers (:func:`json_default`). ``fsync=False`` skips
    the sync to disk (for caches, where a lost file is only extracted again).

    Raises:
        UsmtlError: the write failed (the message names ``path``); ``path`` is unchanged and
            no temporary file is left.
    """
    def write(f):
        json.dump(data, f, indent=indent, default=json_default)
        f.write("\n")

    _write_atomic(path, write, fsync)


def write_binary_atomic(path: str, write) -> None:
    """``write(binary file)`` whole or not at all, as :func:`write_json_atomic` (a packed crop
    file is written this way)."""
    _write_atomic(path, write, binary=True)


def write_text_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically, like :func:`write_json_atomic`."""
    _write_atomic(path, lambda f: f.write(text))


def write_csv_atomic(path: str, frame, index: bool = False, **to_csv) -> None:
    """Write a pandas frame as CSV to ``path`` atomically, like :func:`write_json_atomic`."""
    _write_atomic(path, lambda f: frame.to_csv(f, index=index, **to_csv))


def read_json(path: str):
    """A JSON file; a :class:`UsmtlError` naming it when it cannot be read."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise UsmtlError(f"Cannot read {path}: {exc}") from None
