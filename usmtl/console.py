"""What usmtl says on the console, and where everything else goes.

- :func:`warn_once`: inside :func:`said_once` (every ``usmtl`` command runs in one), a
  warning is said once (an experiment trains several runs; the same task without validation
  positives is one warning, not one per run); outside it, every time.
- :func:`third_party_output`: a block whose C/C++ output on file descriptors 1 and 2 (the
  TFLite converter's ``fully_quantize: ...``, LiteRT's ``Created TensorFlow Lite XNNPACK
  delegate``) is kept out of the console: appended to the log file of ``usmtl --log FILE``
  when there is one, dropped otherwise. ``USMTL_LOG_LEVEL`` other than ``quiet`` (``usmtl
  --verbose``) lets it through.
- :func:`log`: a line for the log file only (the full per-epoch metrics, third-party
  warnings).

``usmtl --log FILE`` sets ``USMTL_LOG_FILE``; :func:`start_log` copies everything the
command prints to that file too. Importing this module imports no TensorFlow.

Example:
    >>> from usmtl.console import said_once, warn_once
    >>> with said_once():
    ...     warn_once("demo", "said once", stream=None), warn_once("demo", "again", stream=None)
    (True, False)
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import time
import warnings

LOG_ENV = "USMTL_LOG_FILE"
_SAID: set | None = None  # the keys said in the open said_once() scope; None: no scope


def log_file() -> str | None:
    """The file of ``usmtl --log`` (``USMTL_LOG_FILE``), None without one."""
    return os.environ.get(LOG_ENV) or None


def verbose() -> bool:
    """Third-party output is let through (``USMTL_LOG_LEVEL`` other than ``quiet``)."""
    return os.environ.get("USMTL_LOG_LEVEL", "quiet").lower() not in ("quiet", "")


def log(text: str) -> None:
    """Append ``text`` (one or more lines) to the log file, when there is one."""
    path = log_file()
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")


@contextlib.contextmanager
def said_once():
    """A scope (one command) in which :func:`warn_once` says each warning once; nested
    scopes share the outermost one."""
    global _SAID
    outer = _SAID
    if outer is None:
        _SAID = set()
    try:
        yield
    finally:
        if outer is None:
            _SAID = None


def warn_once(key, text: str, stream="stderr") -> bool:
    """Print ``warning: text`` unless a warning of ``key`` was said already in the open
    :func:`said_once` scope (repeats go to the log file). ``stream``: where to print (None:
    nowhere). Returns whether it was printed."""
    if _SAID is not None and key in _SAID:
        log(f"warning (again): {text}")
        return False
    if _SAID is not None:
        _SAID.add(key)
    if stream is not None:  # sys.stderr now, not at import: --log replaces it
        print(f"warning: {text}", file=sys.stderr if stream == "stderr" else stream, flush=True)
    return True


@contextlib.contextmanager
def third_party_output():
    """Send what C/C++ code writes to file descriptors 1 and 2 inside the block to the log
    file (or nowhere). Python's own ``sys.stdout``/``sys.stderr`` writes are flushed first
    and are not affected after the block."""
    if verbose():
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = []
    with tempfile.TemporaryFile(mode="w+b") as sink:
        try:
            for fd in (1, 2):
                try:
                    saved.append((fd, os.dup(fd)))
                    os.dup2(sink.fileno(), fd)
                except OSError:  # no such descriptor (an embedding host): nothing to hide
                    pass
            yield
        finally:
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            if text.strip():
                log(text)


def quiet_python_loggers() -> None:
    """Third-party Python logging (TensorFlow's ``tf.function`` retracing warnings and the
    like) goes to the log file, or nowhere, instead of the console. Call it before
    TensorFlow is imported: TensorFlow adds its own console handler only when the root
    logger has none."""
    if verbose():
        return
    path = log_file()
    root = logging.getLogger()
    if not any(getattr(h, "_usmtl", False) for h in root.handlers):
        handler = logging.FileHandler(path) if path else logging.NullHandler()
        handler._usmtl = True
        root.addHandler(handler)


def route_warnings() -> None:
    """Python warnings raised outside usmtl (Keras, TensorFlow, NumPy) go to the log file
    instead of the console; usmtl's own are shown as usual."""
    if verbose():
        return
    shown = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if f"{os.sep}usmtl{os.sep}" in filename:
            return shown(message, category, filename, lineno, file, line)
        log(f"{category.__name__}: {message} ({filename}:{lineno})")

    warnings.showwarning = showwarning


class _Tee:
    """A text stream that also appends to the log file."""

    def __init__(self, stream, path: str):
        self._stream, self._path = stream, path

    def write(self, text):
        with open(self._path, "a", encoding="utf-8") as f:
            f.write(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def start_log(path: str) -> None:
    """``usmtl --log FILE``: everything the command prints is copied to ``path``, and
    third-party output and the full per-epoch metrics are written there."""
    os.environ[LOG_ENV] = os.path.abspath(path)
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"# usmtl {' '.join(sys.argv[1:])}  ({time.strftime('%Y-%m-%d %H:%M:%S')})\n")
    if not isinstance(sys.stdout, _Tee):
        sys.stdout = _Tee(sys.stdout, path)
        sys.stderr = _Tee(sys.stderr, path)
