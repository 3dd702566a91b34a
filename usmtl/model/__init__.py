"""Model: backbones, the hierarchical hinge and the multi-task network (keras.ops only, so
it builds and trains on any Keras backend)."""
