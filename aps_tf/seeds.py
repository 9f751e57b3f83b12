"""The one way runs derive random seeds: from the config's seed and integer keys.

Every random draw of a run (architecture samples, data order, augmentation,
probes) takes a seed derived from (cfg.seed, stream, ...) rather than from a
stateful generator, so a resumed run draws exactly what the unkilled run
would have, and the search can draw in-graph, keyed on the step tensor.

`integer` is for host code that needs one Python int (tf.data seeds);
`stateless` is a `[2]` int64 seed for `tf.random.stateless_*`, usable with
Python ints or tensors, eagerly or inside a `tf.function`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Streams: one per kind of draw, so that adding a draw never shifts another.
TRAIN_ARCH, CONTROLLER_ARCH, PROBE, DATA, TRAIN_DATA = 1, 2, 3, 4, 5


def integer(*keys: int) -> int:
  """A non-negative int31 derived from integers (reproducible)."""
  return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0] % (2**31 - 1))


def stateless(seed, stream: int, *keys) -> tf.Tensor:
  """A `[2]` int64 seed for stateless ops, folded from (seed, stream, *keys).

  Keys may be tensors (the step inside a traced loop).
  """
  s = tf.stack([tf.cast(seed, tf.int64), tf.constant(int(stream), tf.int64)])
  for k in keys:
    s = tf.random.experimental.stateless_fold_in(s, tf.cast(k, tf.int64))
  return s
