"""Errors a user can act on. Each message names the file, row or key at fault."""


class UsmtlError(Exception):
    """Base class: the CLI prints these without a traceback and exits with status 2."""


class ConfigError(UsmtlError):
    """A configuration key is unknown, has the wrong type, or an invalid value."""


class ManifestError(UsmtlError):
    """A manifest cannot be used. ``problems`` lists every problem found, not just the first."""

    def __init__(self, message, problems=()):
        self.problems = list(problems)
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class ImageReadError(UsmtlError):
    """An image file is missing or cannot be decoded."""
