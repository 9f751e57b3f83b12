"""Beam search over the controller for the most likely architectures (paper §5.3).

A real beam search of width B: decisions are expanded left to right; at every
step each of the (at most B) live prefixes is extended by every valid
candidate of that decision and the B extensions with the largest prefix
log-likelihood survive. The top-N complete sequences (N <= B) by sequence
log-likelihood are returned. Unlike the authors' release (an unpruned
best-first search, exhaustive in the worst case), the cost is
O(D * B * A_max) LSTM evaluations, so it is exact only when B covers every
prefix; with B >= N it returns N distinct architectures, ranked.

All beams run as one batch through one traced `step` function.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from aps_tf.policy import Policy


@dataclasses.dataclass
class Beam:
  """One beam: decisions and their summed log-probability."""
  arch: list[int]
  log_prob: float


def beam_search(controller: Policy, width: int, top_n: int) -> list[Beam]:
  """The `top_n` most probable architectures under the policy.

  Args:
    controller: the policy (its LSTM steps and valid-candidate mask).
    width: beams kept per decision (at least `top_n`).
    top_n: architectures returned.

  Returns:
    Beams, most probable first.

  Raises:
    ValueError: a width or top_n below 1.
  """
  if top_n < 1 or width < 1:
    raise ValueError(f"beam width ({width}) and top_n ({top_n}) must be positive")
  width = max(width, top_n)
  d_count = controller.num_decisions
  mask = controller.valid_mask

  @tf.function(reduce_retracing=True)
  def step(t, prev, taken, states):
    left = controller.budget_left(taken, t)  # t is a tensor: one trace for all steps
    logits, new_states = controller.step(t, prev, left, states)
    return tf.nn.log_softmax(logits), new_states

  archs = np.zeros((1, d_count), np.int32)
  scores = np.zeros((1,), np.float64)
  states = controller.initial_state(1)
  prev = tf.zeros([1], tf.int32)
  for t in range(d_count):
    logp, states = step(tf.constant(t), prev, tf.constant(archs), states)
    logp = logp.numpy().astype(np.float64)
    valid = mask[t] > 0
    cand = scores[:, None] + np.where(valid[None], logp, -np.inf)  # [n, A]
    flat = np.argsort(-cand, axis=None, kind="stable")
    flat = [f for f in flat if np.isfinite(cand.flat[f])][:width]
    rows, cols = np.unravel_index(np.array(flat), cand.shape)
    archs = archs[rows].copy()
    archs[:, t] = cols
    scores = cand[rows, cols]
    states = [tf.gather(s, rows) for s in states]
    prev = controller.token(t, tf.constant(cols, tf.int32))
  order = np.argsort(-scores, kind="stable")[:top_n]
  return [Beam([int(a) for a in archs[i]], float(scores[i])) for i in order]


def _reward(b: dict) -> float:
  r = b.get("reward")
  return float("-inf") if r is None else float(r)


def pick(beams_info: list[dict], target: float, rule: str = "closest_to_target") -> dict:
  """The architecture to retrain among the top-N rows (`cost`, `log_prob`, `reward`).

  "closest_to_target" (paper §5.3): the cost closest to the target; ties go
  to the higher re-scored reward, then to the higher log-probability.
  "best_reward": the highest re-scored reward (accuracy with the soft budget
  applied); ties go to the higher log-probability. Needs re-scored rewards.
  """
  if rule == "closest_to_target":
    return min(beams_info, key=lambda b: (abs(b["cost"] - target), -_reward(b), -b["log_prob"]))
  if rule == "best_reward":
    if any(b.get("reward") is None for b in beams_info):
      raise ValueError("search.pick='best_reward' needs re-scored rewards (search.rescore=True)")
    return max(beams_info, key=lambda b: (_reward(b), b["log_prob"]))
  raise ValueError(f"unknown pick rule {rule!r}; expected 'closest_to_target' or 'best_reward'")
