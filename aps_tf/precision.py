"""Mixed precision: the one place that maps the `mixed_precision` config field to
Keras dtype policies and loss scaling.

`mixed_precision` is "" (float32 everywhere), "mixed_bfloat16" (TPUs, recent
GPUs and CPUs with bfloat16 units) or "mixed_float16" (GPUs; needs loss
scaling, as float16 gradients underflow).

Under a mixed policy the convolutions and matmuls run in the compute dtype
(bfloat16/float16) and every variable is stored in float32. What stays in
float32, and why:

  * logits, softmax and the loss: the supernet casts its logits to float32, so
    the cross-entropy and the reward's accuracy are float32;
  * BN statistics and the normalisation itself (`layers.PerCandidateBatchNorm`
    casts its input up and its output back): batch variances of narrow
    candidates underflow in half precision;
  * the projections P/Q and the meta-weights are read in float32; a candidate's
    kernel is formed (`W Q P`) in float32 and only then cast to the compute
    dtype, so the sharing structure is not rounded twice;
  * Phi and its step (`aps_tf.transition`), which read P/Q outside any layer
    call, so they never see the policy;
  * the controller: build it outside `policy_scope` (its LSTM and REINFORCE
    log-probabilities are tiny and precision-sensitive).

Use: build models inside `policy_scope(cfg.mixed_precision)`, wrap their
optimizer with `wrap_optimizer`, and take gradients of `scale_loss(opt, loss)`;
`opt.apply_gradients` then unscales them (and skips a step whose float16
gradients overflowed).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import keras
import tensorflow as tf

from aps_tf import schema

POLICIES = schema.PRECISION_POLICIES


def policy_name(name: str) -> str:
  """The Keras policy name of a `mixed_precision` value ("" -> "float32")."""
  if name not in POLICIES:
    raise ValueError(f"mixed_precision: expected one of {POLICIES}, got {name!r}")
  return name or "float32"


def policy(name: str) -> keras.DTypePolicy:
  """The Keras dtype policy of a `mixed_precision` value."""
  return keras.DTypePolicy(policy_name(name))


def compute_dtype(name: str) -> tf.DType:
  return tf.as_dtype(policy(name).compute_dtype)


@contextlib.contextmanager
def policy_scope(name: str) -> Iterator[keras.DTypePolicy]:
  """Layers created inside this block take the policy of `name` (and keep it).

  The global policy is restored on exit, so what is built afterwards (the
  controller, metrics) stays float32.
  """
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(policy_name(name))
  try:
    yield keras.config.dtype_policy()
  finally:
    keras.config.set_dtype_policy(previous)


def wrap_optimizer(optimizer: keras.optimizers.Optimizer, name: str) -> keras.optimizers.Optimizer:
  """`optimizer` wrapped in dynamic loss scaling for float16; else unchanged."""
  if policy_name(name) == "mixed_float16":
    return keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def scale_loss(optimizer: keras.optimizers.Optimizer, loss: tf.Tensor) -> tf.Tensor:
  """The loss to differentiate: scaled when `optimizer` scales losses."""
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    return optimizer.scale_loss(loss)
  return loss


def loss_scale(optimizer: keras.optimizers.Optimizer) -> tf.Tensor | float:
  """The factor `scale_loss` multiplies by (1.0 without loss scaling).

  Gradients of the scaled loss carry it; a term added to them by hand (coupled
  weight decay, `g + wd * v`) must carry it too (`g + wd * scale * v`), since
  `apply_gradients` divides every gradient by it.
  """
  if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
    return optimizer.scale_loss(tf.constant(1.0))
  return 1.0


def to_float32(x: tf.Tensor) -> tf.Tensor:
  """Casts a floating tensor (logits, a BN input) up to float32."""
  return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)
