"""The search's architecture draws, in graph code: stateless in (seed, stream, step).

A resumed run draws what the unkilled one did (`aps_tf.seeds`).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from aps_tf import seeds


def train_archs(task, step):
  """The `[R, D]` architectures of the supernet step at `step`.

  Args:
    task: the `SearchTask`.
    step: the step (a scalar tensor).

  Returns:
    Uniform per decision in warm-up, else policy samples; one row per
    replica (equal rows unless `search.per_replica_archs`).
  """
  n = task.num_replicas if task.cfg.search.per_replica_archs else 1
  seed = seeds.stateless(task.cfg.seed, seeds.TRAIN_ARCH, step)
  counts = tf.constant(task.space.num_candidates, tf.float32)

  def uniform():
    u = tf.random.stateless_uniform([n, task.space.num_decisions], seed)
    return tf.minimum(tf.cast(tf.floor(u * counts), tf.int32),
                      tf.cast(counts, tf.int32) - 1)

  def policy():
    return task.policy.unroll(n, seed=seed)[0]

  archs = tf.cond(tf.cast(step, tf.int64) < task.warmup_steps, uniform, policy)
  return tf.repeat(archs, task.num_replicas // n, axis=0)


def policy_arch(task, step):
  """The `[D]` architecture the policy is rewarded for at `step`.

  Args:
    task: the `SearchTask`.
    step: the step (a scalar tensor).

  Returns:
    One policy sample.
  """
  seed = seeds.stateless(task.cfg.seed, seeds.CONTROLLER_ARCH, step)
  return task.policy.unroll(1, seed=seed)[0][0]


class HostSampling:
  """The `SearchTask`'s draws as host arrays (tests, benchmarks, analysis).

  A mixin over the task's traced `_train_archs_fn` and `_policy_arch_fn`.
  """

  def train_archs(self, step: int) -> np.ndarray:
    """The architectures the search trains at `step` (host copy).

    Args:
      step: the step.

    Returns:
      `[R, D]` int32.
    """
    return self._train_archs_fn(tf.constant(step, tf.int64)).numpy()

  def policy_arch(self, step: int) -> np.ndarray:
    """The architecture the policy is rewarded for at `step` (host copy).

    Args:
      step: the step.

    Returns:
      `[D]` int32.
    """
    return self._policy_arch_fn(tf.constant(step, tf.int64)).numpy()

