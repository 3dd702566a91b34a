"""Data: manifests, image readers, importers, splits, RoI crops and the tf.data pipeline."""
