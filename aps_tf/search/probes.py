"""The search's analysis probes (docs/method.md): gradient cosine, coupled updates, policy.

Read-only measurements of a `SearchTask` through its public seams (the
supernet's searched units, the policy's sampling, the task's probe
gradients); `analysis_record` is the periodic record the runner writes
every `search.analysis_every_steps`.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from aps_tf import seeds


def gradients_fn(task):
  """A tf.function `(arch, images, labels) -> [grad per searched unit]` (no update).

  Meta-weight gradients of `arch` on one local batch. They are computed in
  replica context (every replica computes the same, nothing is reduced): in
  cross-replica context on-read BN statistics would be read through a
  collective, which has no gradient.

  Args:
    task: the `SearchTask`.

  Returns:
    The traced function; gradients in `task.units` order.
  """
  kernels = [layer.kernel for layer, _, _ in task.units]

  def grads(arch, images, labels):
    def replica_fn():
      with tf.GradientTape() as tape:
        logits = task.net(images, arch, training=False)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True))
      return tape.gradient(loss, kernels)

    out = task.strategy.run(replica_fn)
    return [task.strategy.experimental_local_results(g)[0] for g in out]

  return tf.function(grads)


def probe_archs(task, step: int) -> tuple[np.ndarray, np.ndarray]:
  """Two different architectures to compare at `step`.

  Args:
    task: the `SearchTask`.
    step: the search step (seeds the draw).

  Returns:
    (a, a'): uniform in warm-up, else from the policy (a collapsed policy
    falls back to uniform, then to the largest or smallest architecture).
  """
  space = task.space
  rng = np.random.default_rng(seeds.integer(task.cfg.seed, seeds.PROBE, step))
  if step < task.warmup_steps:
    a1, a2 = (np.array(space.sample_uniform(rng), np.int32) for _ in range(2))
    return a1, a2
  archs = task.policy.sample(seeds.stateless(task.cfg.seed, seeds.PROBE, step), 16)[0].numpy()
  a1 = archs[0]
  others = [a for a in archs[1:] if not np.array_equal(a, a1)]
  # Eq. 3 compares two *different* candidates; a collapsed policy falls back to uniform.
  a2 = others[0] if others else np.array(space.sample_uniform(rng), np.int32)
  if np.array_equal(a1, a2):
    a2 = np.array(space.largest() if list(a1) != space.largest() else space.smallest(),
                  np.int32)
  return a1, a2


def probe(task, step: int, images, labels) -> dict[str, Any]:
  """Gradient cosine (Eq. 3) and coupled-gradient norm (§3.3) of two sampled archs.

  The two architectures are evaluated on the same batch (BN in inference
  mode, no update).
    grad_cosine: cos(g_W(a), g_W(a')) per APS layer, averaged over layers.
    coupled_grad_norm: the part of the update on a' that lands on a's
      candidate kernels, sqrt(sum_l ||Q^{i}^T g_W(a') P^{o}||_F^2) over the
      layers where a and a' pick different candidates (the paper's "coupled
      updates from other candidates", one step, lr omitted). It is exactly 0
      under independent sharing and largest under ordinal.

  Args:
    task: the `SearchTask`.
    step: the search step.
    images: one local batch of images.
    labels: its labels.

  Returns:
    {"grad_cosine", "coupled_grad_norm", "probe_archs"}.
  """
  a1, a2 = probe_archs(task, step)
  g1 = [g.numpy() for g in task.probe_grads(tf.constant(a1), images, labels)]
  g2 = [g.numpy() for g in task.probe_grads(tf.constant(a2), images, labels)]
  cos = []
  for x, y in zip(g1, g2):
    nx, ny = np.linalg.norm(x), np.linalg.norm(y)
    if nx > 0 and ny > 0:
      cos.append(float(np.sum(x * y) / (nx * ny)))
  idx1 = task.net.slot_indices(a1).numpy()
  idx2 = task.net.slot_indices(a2).numpy()
  coupled = 0.0
  for (layer, in_slot, out_slot), g in zip(task.units, g2):
    i1 = None if in_slot is None else idx1[in_slot]
    i2 = None if in_slot is None else idx2[in_slot]
    o1 = None if out_slot is None else idx1[out_slot]
    o2 = None if out_slot is None else idx2[out_slot]
    if (i1, o1) == (i2, o2):
      continue
    coupled += float(np.sum(layer.project_gradient(g, i1, o1) ** 2))
  return {"grad_cosine": float(np.mean(cos)) if cos else float("nan"),
          "coupled_grad_norm": math.sqrt(coupled), "probe_archs": [a1.tolist(), a2.tolist()]}


def decision_probabilities(task, step: int, n: int = 64) -> np.ndarray:
  """Empirical frequency of each candidate over `n` policy samples.

  Args:
    task: the `SearchTask`.
    step: the search step (seeds the draw).
    n: samples.

  Returns:
    `[D, A_max]` frequencies; each row sums to 1.
  """
  policy = task.policy
  archs = policy.sample(seeds.stateless(task.cfg.seed, seeds.PROBE, step, 1), n)[0].numpy()
  out = np.zeros((task.space.num_decisions, policy.max_candidates))
  for t in range(task.space.num_decisions):
    out[t] = np.bincount(archs[:, t], minlength=policy.max_candidates) / n
  return out


def analysis_record(task, step: int, images, labels) -> dict[str, Any]:
  """The periodic analysis record: probes, Phi (total and per layer), decision probabilities.

  Args:
    task: the `SearchTask`.
    step: the search step.
    images: the fixed probe batch (one replica's).
    labels: its labels.

  Returns:
    A `metrics.jsonl` record of kind 'analysis'.
  """
  rec = {"kind": "analysis", "step": step}
  rec.update(probe(task, step, images, labels))
  rec["phi"] = float(task.net.phi().numpy())
  rec["phi_per_layer"] = {k: float(v.numpy()) for k, v in task.net.phi_per_layer().items()}
  rec["probabilities"] = decision_probabilities(task, step).tolist()
  return rec


# Pixels per (decision, candidate) cell of the decision-probability image.
_CELL = 8


def probability_image(probabilities) -> np.ndarray:
  """[1, decisions*cell, candidates*cell, 1] image of decision probabilities
  (one row per decision, one column per candidate, smallest first; white = 1)."""
  p = np.clip(np.asarray(probabilities, np.float32), 0.0, 1.0)
  return np.kron(p, np.ones((_CELL, _CELL), np.float32))[None, :, :, None]


def write_summaries(record: dict[str, Any]) -> None:
  """TensorBoard summaries of an analysis record: Phi per layer, the probabilities image.

  Args:
    record: a `metrics.jsonl` record; called inside its writer and step.
  """
  for name, val in (record.get("phi_per_layer") or {}).items():
    tf.summary.scalar(f"phi/{name}", float(val))
  if record.get("probabilities"):
    tf.summary.image("decision_probabilities", probability_image(record["probabilities"]),
                     description="rows: decisions (layers); columns: candidates, "
                     "smallest first; brightness: probability")


class AnalysisProbes:
  """The `SearchTask`'s periodic hooks (`runner.Task.at_interval`, `summaries`).

  A mixin: the task's `__init__` sets `_probe_batch = None`; the probe batch
  is the first batch of the reward split's first epoch, unaugmented.
  """

  def summaries(self, record) -> None:
    """The analysis record's TensorBoard summaries (`write_summaries`).

    Args:
      record: a metrics record.
    """
    write_summaries(record)

  def at_interval(self, step: int, log) -> None:
    """Writes the analysis record (`analysis_record`) on a fixed reward batch.

    Args:
      step: the search step.
      log: the run's metrics log (`aps_tf.runner.MetricsLog`).
    """
    if self._probe_batch is None:
      batch = next(iter(self.dataset("reward", 0, augment=False)))
      self._probe_batch = tuple(self.strategy.experimental_local_results(x)[0] for x in batch)
    log.write(analysis_record(self, step, *self._probe_batch))
