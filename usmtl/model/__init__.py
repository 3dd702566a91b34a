"""Model: backbones, the hierarchical hinge and the multi-task network (keras.ops only, so
it builds and trains on any Keras backend).

``import usmtl.model`` registers every custom object usmtl saves in a ``.keras`` file (the
input normalisation, augmentation, hinge and conditional-child layers), after which
``keras.saving.load_model`` opens any usmtl model. Keras itself auto-imports only its own
family of packages, so this one import is needed; :func:`usmtl.load` does it for you.

This imports Keras (and its backend). The backbone registry that config validation reads
without Keras is :mod:`usmtl.registry`.
"""

from usmtl.model import augment, backbones, hinge  # noqa: F401  (register the custom layers)

# The import a user needs before keras.saving.load_model; error messages name it.
REGISTER_IMPORT = "import usmtl.model"
