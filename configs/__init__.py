"""The shipped configs. setup.py installs this folder as the package ``usmtl._presets``;
read them through ``usmtl.presets`` (``usmtl presets`` lists them)."""
