"""usmtl's version, in a ground-floor module so that no module imports the package root."""
__version__ = "0.1.0"
