"""Evaluation: metrics and statistics in NumPy (no TensorFlow needed)."""
