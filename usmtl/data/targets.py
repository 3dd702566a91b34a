"""Training targets from task labels: what every input pipeline feeds the losses.

Labels are dictionaries keyed by task name. An unknown label (NaN) is fed as 0 with a
sample weight of 0, so it contributes nothing to its task's loss (Keras rejects
``class_weight`` for multi-output models; per-output sample weights are the way). No
TensorFlow here: the ``tf.data`` pipeline and the JAX engine both use it.

Example:
    >>> import numpy as np
    >>> from usmtl.data.targets import targets
    >>> y, w = targets({"alnm": np.array([1.0, np.nan, 0.0])})
    >>> y["alnm"].ravel().tolist(), w["alnm"].tolist()
    ([1.0, 0.0, 0.0], [1.0, 0.0, 1.0])
"""

from __future__ import annotations

import numpy as np


def targets(labels: dict[str, np.ndarray], balance: bool = False):
    """``(y, sample_weight)`` dictionaries from NaN-for-unknown labels.

    With ``balance`` the positives of each task are weighted by negatives/positives, so a
    rare task (ALNM >= 4) is not drowned by its negatives.
    """
    y, weights = {}, {}
    for name, values in labels.items():
        values = np.asarray(values, np.float32)
        known = ~np.isnan(values)
        w = known.astype(np.float32)
        if balance:
            pos = float(np.sum(values[known] == 1))
            neg = float(np.sum(values[known] == 0))
            if pos > 0 and neg > 0:
                w = np.where(known & (values == 1), neg / pos, w).astype(np.float32)
        y[name] = np.nan_to_num(values, nan=0.0).reshape(-1, 1)
        weights[name] = w
    return y, weights
