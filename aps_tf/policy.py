"""The RL policy (the paper's controller): a 2-layer LSTM over width decisions (docs/method.md#controller-and-reward).

One step per decision `t = 0..D-1`. The step input is the concatenation of

  * an embedding of the previous decision (a start token at `t = 0`); every
    (decision, candidate) pair has its own token, so "index 2" of a stage-1
    layer and of a stage-3 layer are different inputs;
  * a one-hot of the layer index `t` (length D);
  * the fraction of the budget still left,
        left_t = clip(1 - cost(a_<t, smallest for t..D-1) / target, 0, 1),
    i.e. the cost (FLOPs or params, whatever the reward constrains) of the
    network whose decided layers take their chosen widths and whose
    undecided layers (this one included) take their smallest candidate,
    relative to the target. It is 1 - cost(smallest)/target at t = 0 and
    shrinks as wide layers are committed; 0 means the budget is spent even if
    every remaining layer goes minimal. It is computed in-graph by a cost
    function `cost_fn(arch[N, D]) -> [N]` (see `aps_tf.search.reward`); with
    no cost function the feature is a constant 1.

The LSTM output goes through a linear head for decision `t` (a `[D, H, A_max]`
kernel); logits of candidates a decision does not have (`a >= A_t`) are
masked to -1e9, so their probability is exactly 0. Every weight is
initialised U(-0.1, 0.1).

`kind='shared'` is the authors' release's parameterisation: one embedding
token per candidate *index* (shared by all decisions, plus the start token),
of width `hidden - D - 1` so that the LSTM input is `hidden` wide, and one
linear head `[H, A_max]` shared by all decisions, its bias initialised to 0.
The layer one-hot and the budget feature tell the decisions apart.

`sample(seed)` draws an architecture with its log-probability and entropy
(sum over steps of the entropy of each step's distribution given the sampled
prefix); `log_prob(arch)` re-scores a given architecture by teacher forcing
(the REINFORCE loss takes its gradient). Both are tf.functions traced once.
`step(...)` exposes one LSTM step for beam search.
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from aps_tf import schema

NEG_INF = -1e9
KINDS = schema.POLICY_KINDS


class Policy(keras.Model):
  """LSTM policy over `num_candidates[t]`-way decisions.

  Args:
    num_candidates: candidates per decision, e.g. `space.num_candidates`.
    hidden: LSTM width (100).
    num_layers: stacked LSTM layers (2).
    cost_fn: optional in-graph `arch[N, D] int32 -> cost[N] float`.
    target: the budget the cost is measured against.
    init_range: U(-r, r) initialisation (0.1).
    seed: seeds the initialisers and the internal tf.random.Generator.
    kind: 'per_decision' (default) or 'shared' (the release's; module doc).

  Raises:
    ValueError: bad candidate counts, an unknown kind, or 'shared' with
      `hidden <= D + 1`.
  """

  def __init__(self, num_candidates: Sequence[int], hidden: int = 100, num_layers: int = 2,
               cost_fn: Callable[[tf.Tensor], tf.Tensor] | None = None,
               target: float | None = None, init_range: float = 0.1, seed: int = 0,
               kind: str = "per_decision", **kwargs):
    super().__init__(**kwargs)
    if kind not in KINDS:
      raise ValueError(f"unknown controller kind {kind!r}; expected one of {KINDS}")
    self.kind = kind
    self.num_candidates = tuple(int(a) for a in num_candidates)
    if not self.num_candidates or min(self.num_candidates) < 1:
      raise ValueError(f"bad candidate counts {self.num_candidates}")
    self.num_decisions = len(self.num_candidates)
    self.max_candidates = max(self.num_candidates)
    self.hidden = int(hidden)
    self.num_layers = int(num_layers)
    self._cost_fn = cost_fn
    self._target = None if target is None else float(target)
    offsets = np.cumsum((0,) + self.num_candidates[:-1]) + 1  # token 0 = start
    if kind == "shared":
      offsets = np.ones(self.num_decisions, np.int64)  # token 1 + a for index a
    self._offsets = tf.constant(offsets, tf.int32)
    mask = np.zeros((self.num_decisions, self.max_candidates), np.float32)
    for t, a in enumerate(self.num_candidates):
      mask[t, :a] = 1.0
    self._mask = tf.constant(mask)
    self.valid_mask = mask  # [D, A_max] numpy: 1 where decision t has candidate a
    init = lambda s: keras.initializers.RandomUniform(-init_range, init_range, seed=seed + s)
    shared = kind == "shared"
    emb_dim = self.hidden - self.num_decisions - 1 if shared else self.hidden
    if emb_dim < 1:
      raise ValueError(f"controller kind 'shared' needs hidden > {self.num_decisions + 1} "
                       f"(decisions + 1), got {self.hidden}")
    self.embedding = keras.layers.Embedding(
        1 + (self.max_candidates if shared else sum(self.num_candidates)), emb_dim,
        embeddings_initializer=init(1), name="embedding")
    for i in range(self.num_layers):  # one attribute each: tf.train.Checkpoint tracks them
      setattr(self, f"lstm_{i}", keras.layers.LSTMCell(
          self.hidden, kernel_initializer=init(10 + i), recurrent_initializer=init(20 + i),
          bias_initializer=init(30 + i), unit_forget_bias=False, name=f"lstm_{i}"))
    head = () if shared else (self.num_decisions,)
    self.head_kernel = self.add_weight(
        name="head_kernel", shape=head + (self.hidden, self.max_candidates),
        initializer=init(2))
    self.head_bias = self.add_weight(name="head_bias", shape=head + (self.max_candidates,),
                                     initializer="zeros" if shared else init(3))
    self.generator = tf.random.Generator.from_seed(seed)
    in_dim = emb_dim + self.num_decisions + 1
    for i, cell in enumerate(self.cells):
      cell.build((None, in_dim if i == 0 else self.hidden))
    self.embedding.build((None,))
    self.sample_traces = 0
    self.log_prob_traces = 0
    # No autograph: the decisions are an explicit tf.while_loop (`unroll`).
    self._sample_fn = tf.function(self._sample_impl, autograph=False, input_signature=[
        tf.TensorSpec([2], tf.int64), tf.TensorSpec([], tf.int32)])
    self._log_prob_fn = tf.function(self._log_prob_impl, autograph=False, input_signature=[
        tf.TensorSpec([None, self.num_decisions], tf.int32)])

  @property
  def cells(self) -> list[keras.layers.LSTMCell]:
    """The stacked LSTM cells, bottom first."""
    return [getattr(self, f"lstm_{i}") for i in range(self.num_layers)]

  # -- pieces ---------------------------------------------------------------
  def initial_state(self, n) -> list[tf.Tensor]:
    """Zero LSTM states for `n` sequences.

    Args:
      n: batch size.

    Returns:
      (h, c) per layer, each `[n, hidden]`.
    """
    z = tf.zeros([n, self.hidden])
    return [z] * (2 * self.num_layers)

  def budget_left(self, arch_prefix: tf.Tensor, t: int) -> tf.Tensor:
    """Fraction of the budget left before decision `t` (see module doc).

    Args:
      arch_prefix: `[N, D]` int32 decisions; those before `t` count.
      t: the decision (int or scalar tensor).

    Returns:
      `[N]` float32 in [0, 1] (1 without a cost function).
    """
    n = tf.shape(arch_prefix)[0]
    if self._cost_fn is None or self._target is None:
      return tf.ones([n])
    decided = tf.cast(tf.range(self.num_decisions) < t, tf.int32)[None]
    committed = self._cost_fn(arch_prefix * decided)
    return tf.clip_by_value(1.0 - tf.cast(committed, tf.float32) / self._target, 0.0, 1.0)

  def step(self, t, prev_token, left, states):
    """One LSTM step.

    Args:
      t: the decision, a Python int or a scalar tensor.
      prev_token: `[N]` int32 tokens (0 = start, else `offsets[t-1] + a`).
      left: `[N]` float budget fraction.
      states: the LSTM states.

    Returns:
      (masked logits `[N, A_max]`, new states).
    """
    n = tf.shape(prev_token)[0]
    onehot = tf.tile(tf.one_hot(t, self.num_decisions)[None], [n, 1])
    x = tf.concat([self.embedding(prev_token), onehot, left[:, None]], axis=1)
    new_states = []
    for i, cell in enumerate(self.cells):
      h, (h2, c2) = cell(x, [states[2 * i], states[2 * i + 1]])
      new_states += [h2, c2]
      x = h
    if self.kind == "shared":
      logits = tf.matmul(x, self.head_kernel) + self.head_bias
    else:
      logits = tf.matmul(x, tf.gather(self.head_kernel, t)) + tf.gather(self.head_bias, t)
    mask = tf.gather(self._mask, t)[None]
    logits = mask * logits + (1.0 - mask) * NEG_INF
    return logits, new_states

  def token(self, t, a):
    """The input token of candidate `a` at decision `t`.

    Args:
      t: the decision.
      a: `[N]` int32 candidates.

    Returns:
      `[N]` int32 tokens.
    """
    return tf.gather(self._offsets, t) + tf.cast(a, tf.int32)

  @staticmethod
  def _entropy(logits):
    logp = tf.nn.log_softmax(logits)
    return -tf.reduce_sum(tf.exp(logp) * logp, axis=-1)

  # -- sampling and scoring -------------------------------------------------
  def unroll(self, n, seed=None, arch=None):
    """Runs the LSTM over every decision, in graph code (one trace per caller).

    The decisions are a `tf.while_loop`, not a Python loop: the graph holds
    one LSTM step (and one cost of the prefix) whatever the number of
    decisions, so a search's traced step stays small as the network deepens.

    Args:
      n: how many architectures.
      seed: a `[2]` int64 stateless seed; samples when `arch` is None.
      arch: `[n, D]` int32 decisions to teacher-force instead of sampling.

    Returns:
      (arch [n, D] int32, log_prob [n], entropy [n]).
    """
    d = self.num_decisions

    def body(t, prev, taken, logp_total, ent_total, states):
      left = self.budget_left(taken, t)
      logits, states = self.step(t, prev, left, states)
      if arch is None:
        step_seed = tf.random.experimental.stateless_fold_in(seed, t)
        a = tf.random.stateless_categorical(logits, 1, step_seed, dtype=tf.int32)[:, 0]
      else:
        a = tf.gather(arch, t, axis=1)
      logp = tf.nn.log_softmax(logits)
      logp_total += tf.gather(logp, a, batch_dims=1)
      ent_total += self._entropy(logits)
      taken += a[:, None] * tf.one_hot(t, d, dtype=tf.int32)[None]
      return t + 1, self.token(t, a), taken, logp_total, ent_total, states

    loop_vars = (tf.constant(0), tf.zeros([n], tf.int32), tf.zeros([n, d], tf.int32),
                 tf.zeros([n]), tf.zeros([n]), self.initial_state(n))
    out = tf.while_loop(lambda t, *_: t < d, body, loop_vars, maximum_iterations=d)
    return out[2], out[3], out[4]

  def _sample_impl(self, seed, n):
    self.sample_traces += 1
    return self.unroll(n, seed=seed)

  def _log_prob_impl(self, arch):
    self.log_prob_traces += 1
    arch = tf.cast(arch, tf.int32)
    _, logp, ent = self.unroll(tf.shape(arch)[0], arch=arch)
    return logp, ent

  def sample(self, seed=None, n: int = 1):
    """Draws `n` architectures.

    Args:
      seed: a `[2]` int seed for a reproducible draw (the search derives it
        from the step, so a resumed run draws the same); None uses the
        policy's own checkpointed generator.
      n: how many.

    Returns:
      (arch `[n, D]` int32, log_prob `[n]`, entropy `[n]`).
    """
    if seed is None:
      seed = self.generator.make_seeds(1)[:, 0]
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    return self._sample_fn(seed, tf.constant(n, tf.int32))

  def log_prob(self, arch):
    """Re-scores architectures by teacher forcing.

    Args:
      arch: `[N, D]` (or `[D]`) int decisions.

    Returns:
      (log pi(arch) `[N]`, entropy `[N]`).
    """
    arch = tf.convert_to_tensor(arch, tf.int32)
    if arch.shape.rank == 1:
      arch = arch[None]
    return self._log_prob_fn(arch)

  def log_prob_graph(self, arch):
    """The same as `log_prob`, for use inside a caller's tf.function.

    Args:
      arch: `[N, D]` int decisions.

    Returns:
      (log pi(arch) `[N]`, entropy `[N]`).
    """
    return self.unroll(tf.shape(arch)[0], arch=tf.cast(arch, tf.int32))[1:]

  def call(self, arch):
    return self.log_prob_graph(arch)
