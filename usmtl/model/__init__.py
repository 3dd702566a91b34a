"""Model: backbones, the hierarchical hinge and the multi-task network (keras.ops only, so
it builds and trains on any Keras backend)."""

# Importing any usmtl.model module registers the custom layers that saved models refer to.
from usmtl.model import augment as _augment  # noqa: F401,E402
