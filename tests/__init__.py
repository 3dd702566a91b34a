"""usmtl tests (a package, so that tests.conftest wins over a site-packages "tests" such as tf-keras-vis installs)."""
