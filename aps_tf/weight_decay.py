"""Weight decay: the coupled L2 form of the reference (PyTorch SGD `weight_decay`).

`wd * w` is added to the gradient of each decayed variable (the gradient of
`wd/2 * ||w||^2`) before the optimiser sees it. `add_weight_decay` is the one
implementation, used by retraining and the search. With
`decay_bn_and_bias=False` only kernels (conv, depthwise, dense; rank >= 2)
are decayed, not BN gamma/beta or biases.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf


def decayed_variables(model: keras.Model, decay_bn_and_bias: bool) -> list:
  """Trainable variables that get weight decay."""
  if decay_bn_and_bias:
    return list(model.trainable_variables)
  return [v for v in model.trainable_variables if len(v.shape) >= 2]


def decay_mask(variables: Sequence, decayed: Sequence) -> list[bool]:
  """For each of `variables`, whether it is one of `decayed` (by identity)."""
  ids = {id(v) for v in decayed}
  return [id(v) in ids for v in variables]


def add_weight_decay(grads: Sequence, variables: Sequence, weight_decay: float, *,
                     mask: Sequence[bool] | None = None, num_replicas: int = 1) -> list:
  """Coupled L2: `grads[i] + weight_decay / num_replicas * variables[i]` where mask[i].

  Called per replica on the replica's gradients, before they are summed
  across replicas, so the decay is `weight_decay * w` once in total. `mask`
  (default: all) selects the decayed variables; a None gradient stays None.
  """
  if isinstance(weight_decay, (int, float)) and not weight_decay:
    return list(grads)
  if mask is None:
    mask = [True] * len(variables)
  if not len(mask) == len(grads) == len(variables):
    raise ValueError(f"{len(grads)} gradients, {len(variables)} variables, {len(mask)} mask "
                     "entries: expected as many of each")
  scale = weight_decay / int(num_replicas)  # a float, or a tensor (x the loss scale)
  return [g + tf.cast(scale, g.dtype) * tf.cast(tf.convert_to_tensor(v), g.dtype)
          if m and g is not None else g for g, v, m in zip(grads, variables, mask)]
