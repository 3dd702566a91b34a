"""Model: backbones, the hierarchical hinge and the multi-task network (keras.ops only, so
it builds and trains on any Keras backend).

Nothing is imported here: ``usmtl.model.registry`` is read by config validation, which must
not load Keras or TensorFlow. The modules that define custom layers register them when they
are imported (``backbones`` imports ``augment``; ``usmtl.run.load_keras_model`` imports both).
"""
