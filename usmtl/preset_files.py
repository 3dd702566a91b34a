"""Where the shipped configs are: the file lookups that :mod:`usmtl.config` needs (so that
it does not import :mod:`usmtl.presets`, which imports it). Re-exported by
:mod:`usmtl.presets`, the public face."""

from __future__ import annotations

import os
from importlib import resources

from usmtl.errors import ConfigError

_PACKAGE = "usmtl._presets"


def _folder():
    return resources.files(_PACKAGE)


def preset_names() -> list[str]:
    """The names of the shipped configs, sorted."""
    return sorted(p.name[:-5] for p in _folder().iterdir() if p.name.endswith(".yaml"))


def preset_path(name: str) -> str:
    """The file of preset ``name``.

    Raises:
        ConfigError: no such preset; the message lists them.
    """
    path = _folder().joinpath(f"{name}.yaml")
    if not path.is_file():
        raise ConfigError(f"Unknown preset; presets: {preset_names()}. Received: {name!r}")
    return str(path)


def resolve_config(path_or_name: str) -> str:
    """A config file: ``path_or_name`` itself when it is a file, else the preset of that name
    (``paper`` or ``paper.yaml``).

    Raises:
        ConfigError: neither a file nor a preset.
    """
    if os.path.isfile(path_or_name):
        return path_or_name
    name = os.path.basename(path_or_name)
    name = name[:-5] if name.endswith(".yaml") else name
    if os.sep in path_or_name or name not in preset_names():
        raise ConfigError(f"Config file not found, and not a preset name (presets: "
                          f"{preset_names()}). Received: {path_or_name}")
    return preset_path(name)
