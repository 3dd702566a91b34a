"""The importer registry: one :class:`Importer` per data-set layout, as formats are registered.

Every source module of :mod:`usmtl.data.importers` (``busbra``, ``busi``, ``labelimg``)
registers its importer with :func:`register` when it is imported (the package imports the
built-in ones, in that order); :func:`registered` and :func:`get` import every other module
of the package first (those whose name starts with ``_`` apart), so adding a source is adding
one module there, nothing else. A plug-in or a test registers its own the same way.

Example:
    >>> from usmtl.data.importers import get, registered
    >>> [importer.name for importer in registered()][:3]
    ['busbra', 'busi', 'labelimg']
    >>> get("busi").function.__name__
    'import_busi'
    >>> get("ddsm")
    Traceback (most recent call last):
    ...
    usmtl.errors.UsmtlError: Unknown importer; registered: busbra, busi, labelimg. Received: 'ddsm'
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pkgutil
from typing import Callable

from usmtl.errors import UsmtlError

_PACKAGE = "usmtl.data.importers"
_REGISTRY: dict[str, "Importer"] = {}
_DISCOVERED = False


@dataclasses.dataclass(frozen=True)
class Importer:
    """A data-set layout that can be turned into a manifest.

    Attributes:
        name: the registry key, as in ``usmtl import <name>``.
        function: ``function(..., out, ..., log=print) -> pandas.DataFrame``: checks the
            whole input, writes the manifest ``out`` (nothing on a problem: one
            :class:`~usmtl.errors.ManifestError` lists them all) and returns its rows.
        description: one line for listings.
    """

    name: str
    function: Callable
    description: str = ""

    def __repr__(self) -> str:
        return f"<usmtl importer {self.name!r}>"


def _discover() -> None:
    """Import the source modules of the package once; each registers its importer."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for info in sorted(pkgutil.iter_modules([os.path.dirname(__file__)]), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{_PACKAGE}.{info.name}")


def register(importer: Importer, replace: bool = False) -> Importer:
    """Add ``importer`` to the registry (after the built-in ones); returns it.

    Args:
        importer: the :class:`Importer`.
        replace: allow overwriting another importer of that name.

    Returns:
        ``importer``.

    Raises:
        UsmtlError: not an :class:`Importer` with a name, or the name is taken and
            ``replace`` is false.
    """
    if not isinstance(importer, Importer) or not importer.name or not callable(importer.function):
        raise UsmtlError(f"An importer is a usmtl.data.importers.Importer with a name and a "
                         f"function. Received: {importer!r}")
    known = _REGISTRY.get(importer.name)
    if known is not None and known != importer and not replace:
        raise UsmtlError(f"An importer named {importer.name!r} is registered already "
                         f"({known!r}). Received: {importer!r}")
    _REGISTRY[importer.name] = importer
    return importer


def unregister(name: str) -> Importer | None:
    """Remove an importer; returns it (None when there was none)."""
    _discover()
    return _REGISTRY.pop(name, None)


def registered() -> list[Importer]:
    """Every importer, in registration order (the built-in ones by module name first)."""
    _discover()
    return list(_REGISTRY.values())


def get(name: str) -> Importer:
    """The importer ``name``.

    Raises:
        UsmtlError: no importer of that name; the message lists the registered ones.
    """
    _discover()
    if name not in _REGISTRY:
        raise UsmtlError(f"Unknown importer; registered: {', '.join(_REGISTRY)}. "
                         f"Received: {name!r}")
    return _REGISTRY[name]
