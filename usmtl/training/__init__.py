"""Training: the ``fit`` driver and its callbacks."""
