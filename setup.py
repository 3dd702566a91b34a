from setuptools import find_packages, setup

# The shipped configs live once, in the top-level configs/ where a reader finds them; this
# maps that folder to the package usmtl._presets, so a wheel carries them (usmtl.presets).
setup(
    packages=find_packages(include=["usmtl", "usmtl.*"]) + ["usmtl._presets"],
    package_dir={"usmtl._presets": "configs"},
    # usmtl/paper_tables.csv: the paper's published figures (usmtl.paper)
    package_data={"usmtl._presets": ["*.yaml"], "usmtl": ["paper_tables.csv"]},
)
