"""Random streams derived from ``(seed, epoch)`` alone, so that a resumed fit draws what an
uninterrupted one would have.

A stateful generator (a ``tf.data`` shuffle that reshuffles each iteration, a Keras
``SeedGenerator`` advanced at every draw) carries its position in memory only: a fit killed
after epoch ``k`` and resumed would start it again from its beginning, and train epoch
``k + 1`` on other crops and another order than the uninterrupted fit. Deriving each epoch's
seed from the run's seed and the epoch number makes the position needless to save.

Example:
    >>> from usmtl.seeds import epoch_seed
    >>> epoch_seed(0, 3) == epoch_seed(0, 3), epoch_seed(0, 3) == epoch_seed(0, 4)
    (True, False)
    >>> 0 <= epoch_seed(7, 1, stream=2) < 2 ** 31
    True
"""

from __future__ import annotations

import numpy as np


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A seed in ``[0, 2**31)`` for ``epoch`` of a run seeded ``seed``; ``stream`` tells
    apart several generators of the same epoch (the data order, each augmentation layer).

    Args:
        seed: the run's seed (``train.seed``).
        epoch: the 0-based epoch.
        stream: which generator of that epoch.

    Returns:
        The seed, a non-negative int that fits in int32 (what ``tf.data`` and Keras take).
    """
    words = [int(seed) & 0xFFFFFFFF, int(epoch), int(stream)]
    return int(np.random.SeedSequence(words).generate_state(1)[0] & 0x7FFFFFFF)
