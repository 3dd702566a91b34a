"""Named configs that ship with the package: ``paper``, ``paper_chained``, ``busbra``,
``quickstart``, ``mobile``.

The YAML files live once, in the repository's top-level ``configs/`` where a reader finds
them; ``setup.py`` maps that folder to the package ``usmtl._presets``, so a wheel carries them
and a preset name works wherever a config path does (``usmtl fit --config paper``).

Example:
    >>> import usmtl.presets
    >>> from usmtl.presets import preset_names, resolve_config
    >>> "paper" in preset_names()
    True
    >>> resolve_config("paper").endswith("paper.yaml")
    True
    >>> usmtl.presets.load("paper").model.backbone
    'resnet50'
"""

from __future__ import annotations

import os

from usmtl.config import load_config
from usmtl.preset_files import preset_names, preset_path, resolve_config

__all__ = ["preset_names", "preset_path", "resolve_config", "describe", "preset_listing",
           "yaml_text", "load"]


# Words whose full stop ends no sentence, in the presets' header comments.
_ABBREVIATIONS = ("al", "Med", "Phys", "Physiol", "Front", "e.g", "i.e", "vs", "Fig")


def describe(name: str) -> str:
    """What a preset is for: the first sentence of its header comment, whole (it may span
    several comment lines)."""
    words = []
    with open(preset_path(name)) as f:
        for line in f:
            if not line.startswith("#"):
                break
            words += line.lstrip("#").split()
    for i, word in enumerate(words):
        if word.endswith(".") and word.rstrip(".").split("(")[-1] not in _ABBREVIATIONS:
            return " ".join(words[:i + 1])
    return " ".join(words)


def preset_listing(width: int = 100) -> str:
    """Every preset with its whole description, wrapped at ``width`` columns, then the
    folder the files are in (``usmtl presets``)."""
    import textwrap

    names = preset_names()
    pad = max(len(n) for n in names) + 2
    lines = []
    for name in names:
        lines += textwrap.wrap(describe(name), width, initial_indent=name.ljust(pad),
                               subsequent_indent=" " * pad, break_on_hyphens=False)
    return "\n".join(lines + ["", f"(files: {os.path.dirname(preset_path(names[0]))})"])


def yaml_text(name: str) -> str:
    """The YAML of preset ``name``, as shipped (comments included).

    Raises:
        ConfigError: no such preset; the message lists them.
    """
    with open(preset_path(name)) as f:
        return f.read()


def load(name: str, overrides: list[str] | None = None):
    """The validated :class:`~usmtl.config.ExperimentConfig` of preset ``name``, with
    ``overrides`` (``"key=value"`` strings, as ``--set`` takes them).

    Raises:
        ConfigError: no such preset, or an override the config refuses.
    """
    return load_config(preset_path(name), overrides)
