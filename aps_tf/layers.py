"""APS layers: one meta-weight, candidate kernels cut out by projections.

Every layer is called with integer *candidate indices* (scalar tensors), so a
single traced graph serves every architecture:

  dynamic mode (default): channel dims are dynamic inside the graph; a layer
    outputs exactly `c_o` channels for the sampled candidate.
  static mode (`static_shapes=True`, for XLA/TPU): every tensor has the
    layer's largest candidate width; projections are zero-padded, so channels
    beyond `c_o` are exactly zero, and BN re-masks them. The first `c_o`
    channels equal the dynamic mode's output.

Projections P (output) and Q (input) are stored stacked and zero-padded,
`[A, M, c_max]` (see `sharing.py`). They are non-trainable weights the task
loss never reaches (`stop_gradient`); the transitional mode moves them by the
projected Phi step only. For ordinal and independent sharing they are
constant, so the candidate kernel is taken by slicing the meta-weight, which
is the same number as the projection (tested) at a fraction of the cost.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from aps_tf import precision
from aps_tf import schema
from aps_tf import sharing


def _candidates(c: Sequence[int] | None) -> tuple[int, ...] | None:
  return None if c is None else tuple(int(x) for x in c)


def select_row(table, index) -> tf.Tensor:
  """Row `index` of `table` (`[A, ...]`) as a one-hot contraction.

  The static path's way to pick a candidate's row. `table[index]` with a tensor
  index is a strided slice whose begin XLA must know at compile time once it sits
  in a `tf.cond` branch being differentiated: the index (and with it every
  variable it touches) becomes a compile-time constant, so XLA folds the weights
  and recompiles at every step. A one-hot contraction takes the index as data.
  The value is exact: one product by 1, the rest by 0.

  Args:
    table: `[A, ...]`.
    index: a scalar int tensor in [0, A).

  Returns:
    `table[index]`.
  """
  table = tf.convert_to_tensor(table)
  onehot = tf.one_hot(index, tf.compat.dimension_value(table.shape[0]), dtype=table.dtype)
  return tf.tensordot(onehot, table, 1)


def project_kernel(w, q=None, p=None) -> tf.Tensor:
  """Q^T W P of a conv meta-weight `w` `[k, k, I, O]`.

  Written as a 2-D matmul and a batched one over the k*k taps, which need no
  transposes in either direction (an einsum over the middle axis does); the
  projection is the supernet's main cost beyond the dense child's. With both
  sides, the side with fewer columns goes first (cost k*k*I*O*min(x, y) plus a
  small term), picked in-graph when the widths are dynamic.

  Args:
    w: the meta-weight `[k, k, I, O]`.
    q: the input projection `[I, y]`, or None to keep the input side.
    p: the output projection `[O, x]`, or None to keep the output side.

  Returns:
    `[k, k, y, x]` (or I / O on a side without projection).
  """
  k0, k1, m_in, m_out = (int(d) for d in w.shape)
  taps = k0 * k1
  if p is None and q is None:
    return w
  # The projected widths, read once (each `tf.shape(.)[1]` traces a slice).
  x = m_out if p is None else tf.shape(p)[1]
  y = m_in if q is None else tf.shape(q)[1]

  def out_first():  # W P: [k*k*I, O] @ [O, x]; then Q^T per tap
    a = tf.matmul(tf.reshape(w, [taps * m_in, m_out]), p)
    if q is None:
      return tf.reshape(a, [k0, k1, m_in, x])
    a = tf.matmul(q[None], tf.reshape(a, [taps, m_in, x]), transpose_a=True)
    return tf.reshape(a, [k0, k1, y, x])

  def in_first():  # Q^T W per tap: [I, y]^T @ [I, O]; then [k*k*y, O] @ P
    a = tf.matmul(q[None], tf.reshape(w, [taps, m_in, m_out]), transpose_a=True)
    if p is None:
      return tf.reshape(a, [k0, k1, y, m_out])
    a = tf.matmul(tf.reshape(a, [-1, m_out]), p)
    return tf.reshape(a, [k0, k1, y, x])

  if q is None:
    return out_first()
  if p is None:
    return in_first()
  sy, sx = q.shape[1], p.shape[1]
  if sy is not None and sx is not None:  # static widths (the static path)
    return in_first() if sy < sx else out_first()
  return tf.cond(y < x, in_first, out_first)


def batch_moments(x) -> tuple[tf.Tensor, tf.Tensor]:
  """Per-channel mean and (biased) variance over batch and space, as `tf.nn.moments`.

  Written as sums times 1/n: with the channel count dynamic (the supernet's
  widths are tensors), `tf.nn.moments`' mean has a gradient that divides the
  whole activation by n (a RealDiv as large as the activation, in every BN's
  backward pass); here n scales the per-channel sums only.

  Args:
    x: `[N, H, W, C]` activations.

  Returns:
    (mean `[C]`, variance `[C]`).
  """
  inv_n = 1.0 / tf.cast(tf.reduce_prod(tf.shape(x)[:3]), x.dtype)
  mean = tf.reduce_sum(x, axis=[0, 1, 2]) * inv_n
  var = tf.reduce_sum(tf.math.squared_difference(x, tf.stop_gradient(mean)), axis=[0, 1, 2]) * inv_n
  return mean, var


class ChannelSide:
  """One side (input or output) of an APS layer: its candidates and projection."""

  def __init__(self, candidates, meta_width, mode):
    self.candidates = _candidates(candidates)
    self.meta = int(meta_width)
    self.mode = mode
    if self.candidates is not None:
      sharing.check_candidates(self.candidates, self.meta, mode)
      self.cmax = self.candidates[-1]
      starts = np.cumsum((0,) + self.candidates[:-1]) if mode == "independent" else (
          np.zeros(len(self.candidates), np.int64))
      self.starts = tf.constant(starts, tf.int32)
      self.widths = tf.constant(self.candidates, tf.int32)
      self.mask = tf.constant(sharing.column_mask(self.candidates))
    else:
      self.cmax = self.meta

  @property
  def searched(self) -> bool:
    return self.candidates is not None

  def width(self, index):
    # A gather, not `widths[index]`: a strided slice with a tensor index traces
    # three packed bounds per call, and every candidate kernel asks for widths.
    return tf.gather(self.widths, index) if self.searched else tf.constant(self.meta, tf.int32)


class APSLayer(keras.layers.Layer):
  """Base: owns meta-weight sides, their projections and Phi."""

  def __init__(self, in_candidates=None, out_candidates=None, meta_in=None, meta_out=None,
               sharing_mode="ordinal", noise_std=0.0, static_shapes=False, seed=None,
               **kwargs):
    super().__init__(**kwargs)
    self.sharing_mode = sharing.check_mode(sharing_mode)
    self.noise_std = float(noise_std)
    self.static_shapes = bool(static_shapes)
    self.seed = seed
    self._in = ChannelSide(in_candidates, meta_in, self.sharing_mode)
    self._out = ChannelSide(out_candidates, meta_out, self.sharing_mode)
    self.q = self.p = None

  def _add_projection(self, side: ChannelSide, name: str, seed_offset: int):
    if not side.searched:
      return None
    seed = None if self.seed is None else self.seed + seed_offset
    init = sharing.init_projection(self.sharing_mode, side.candidates, side.meta,
                                   self.noise_std, seed)
    # autocast=False: read in float32 under a mixed policy (aps_tf/precision.py).
    return self.add_weight(name=name, shape=init.shape,
                           initializer=keras.initializers.Constant(init),
                           trainable=False, autocast=False)

  def _build_projections(self, in_side=True):
    if in_side:
      self.q = self._add_projection(self._in, "q", 0)
    self.p = self._add_projection(self._out, "p", 1)

  @property
  def projections(self) -> list[tuple[keras.Variable, tf.Tensor]]:
    """(variable, column mask) for each searched side, for the Phi step."""
    out = []
    if self.q is not None:
      out.append((self.q, self._in.mask))
    if self.p is not None:
      out.append((self.p, self._out.mask))
    return out

  def phi_sides(self) -> tuple:
    """The layer's two sides for the Phi step.

    Returns:
      (input, output): per side (variable, mask, candidates) when searched,
      else the fixed width (an identity projection, S = width).
    """
    return tuple((proj, side.mask, side.candidates) if proj is not None else side.meta
                 for side, proj in ((self._in, self.q), (self._out, self.p)))

  def phi(self) -> tf.Tensor:
    """This layer's sharing level Phi (paper Eq. 4).

    Returns:
      A scalar float32 tensor.
    """
    q = self.q.value if self.q is not None else None
    p = self.p.value if self.p is not None else None
    return sharing.phi(q, p, fixed_in=self._in.meta if q is None else 0,
                       fixed_out=self._out.meta if p is None else 0,
                       in_candidates=self._in.candidates, out_candidates=self._out.candidates)

  def _numpy_projection(self, side: ChannelSide, proj, index) -> np.ndarray | None:
    """The candidate `index`'s columns of a projection, or None on an unsearched side."""
    if index is None or not side.searched:
      return None
    return np.asarray(proj)[index][:, :side.candidates[index]]

  def _project(self, side: ChannelSide, proj, index):
    """[M, c] (dynamic) or [M, c_max] (static) projection of a candidate."""
    proj = tf.stop_gradient(tf.convert_to_tensor(proj))
    if self.static_shapes:
      return select_row(proj, index)
    # Gathers and one slice (no gradient reaches P/Q here): fewer traced ops
    # than two strided slices with tensor bounds.
    return tf.slice(tf.gather(proj, index), [0, 0], tf.stack([-1, side.width(index)]))

  def _slice(self, side: ChannelSide, index):
    """(start, size) of the meta rows a frozen-projection candidate occupies."""
    return tf.gather(side.starts, index), side.width(index)

  def _use_slicing(self) -> bool:
    return not schema.is_transitional(self.sharing_mode) and not self.static_shapes

  def get_config(self):
    cfg = super().get_config()
    cfg.update(in_candidates=self._in.candidates, out_candidates=self._out.candidates,
               meta_in=self._in.meta, meta_out=self._out.meta,
               sharing_mode=self.sharing_mode, noise_std=self.noise_std,
               static_shapes=self.static_shapes, seed=self.seed)
    return cfg


class APSConv2D(APSLayer):
  """Conv whose kernel for candidates (i, o) is Q^i^T W P^o (docs/method.md#notation).

  A side given `None` candidates is fixed at its meta width (the RGB input of a
  stem, say) and has no projection. Bias-free: a BN always follows.
  """

  def __init__(self, kernel_size, strides=1, kernel_initializer="he_normal", **kwargs):
    super().__init__(**kwargs)
    self.kernel_size = int(kernel_size)
    self.strides = int(strides)
    self.kernel_initializer = keras.initializers.get(kernel_initializer)

  def build(self, input_shape=None):
    k = self.kernel_size
    self.kernel = self.add_weight(name="kernel", shape=(k, k, self._in.meta, self._out.meta),
                                  initializer=self.kernel_initializer, autocast=False)
    self._build_projections()
    self.built = True

  def candidate_kernel(self, in_index=0, out_index=0, use_projection=None):
    """The kernel of one (input, output) candidate pair.

    Args:
      in_index: the input candidate.
      out_index: the output candidate.
      use_projection: Q^T W P (True) or a slice of W (False, ordinal and
        independent sharing without static shapes); default by sharing mode.

    Returns:
      `[k, k, c_i, c_o]`.
    """
    w = tf.convert_to_tensor(self.kernel)
    if use_projection is None:
      use_projection = not self._use_slicing()
    if not use_projection:
      if self._in.searched:
        start, size = self._slice(self._in, in_index)
        w = w[:, :, start:start + size, :]
      if self._out.searched:
        start, size = self._slice(self._out, out_index)
        w = w[:, :, :, start:start + size]
      return w
    q = self._project(self._in, self.q, in_index) if self._in.searched else None
    p = self._project(self._out, self.p, out_index) if self._out.searched else None
    return project_kernel(w, q, p)

  def project_gradient(self, g: np.ndarray, in_index: int | None,
                       out_index: int | None) -> np.ndarray:
    """Q^{i}^T g P^{o}: a meta-weight gradient seen on one candidate's kernel.

    Args:
      g: the gradient of the meta-weight kernel, `[k, k, M_in, M_out]`.
      in_index: the input candidate, or None to keep the input side whole.
      out_index: the output candidate, or None to keep the output side whole.

    Returns:
      The projected gradient; an unsearched or None side is left as it is.
    """
    p = self._numpy_projection(self._out, self.p, out_index)
    if p is not None:
      g = np.einsum("hwIO,Ox->hwIx", g, p)
    q = self._numpy_projection(self._in, self.q, in_index)
    if q is not None:
      g = np.einsum("hwIx,Iy->hwyx", g, q)
    return g

  def call(self, inputs, in_index=0, out_index=0):
    kernel = tf.cast(self.candidate_kernel(in_index, out_index), inputs.dtype)
    return tf.nn.conv2d(inputs, kernel, self.strides, "SAME")

  def get_config(self):
    cfg = super().get_config()
    cfg.update(kernel_size=self.kernel_size, strides=self.strides,
               kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
    return cfg


class APSDepthwiseConv2D(APSLayer):
  """Depthwise conv over the candidate width: kernel = W P^a, W `[k, k, M]`.

  Only one side: the input and output widths are the same candidate.
  """

  def __init__(self, kernel_size, strides=1, candidates=None, meta=None,
               kernel_initializer="he_normal", **kwargs):
    super().__init__(in_candidates=None, out_candidates=candidates, meta_in=1,
                     meta_out=meta, **kwargs)
    self.kernel_size = int(kernel_size)
    self.strides = int(strides)
    self.kernel_initializer = keras.initializers.get(kernel_initializer)

  def build(self, input_shape=None):
    k = self.kernel_size
    self.kernel = self.add_weight(name="kernel", shape=(k, k, self._out.meta, 1),
                                  initializer=self.kernel_initializer, autocast=False)
    self._build_projections(in_side=False)
    self.built = True

  def candidate_kernel(self, index=0, use_projection=None):
    """The depthwise kernel of one candidate.

    Args:
      index: the candidate (input and output share it).
      use_projection: W P (True) or a slice of W (False); default by sharing mode.

    Returns:
      `[k, k, c, 1]`.
    """
    w = tf.convert_to_tensor(self.kernel)
    if use_projection is None:
      use_projection = not self._use_slicing()
    if not self._out.searched:
      return w
    if not use_projection:
      start, size = self._slice(self._out, index)
      return w[:, :, start:start + size, :]
    k = self.kernel_size
    taps = tf.matmul(tf.reshape(w, [k * k, self._out.meta]), self._project(self._out, self.p, index))
    return tf.reshape(taps, [k, k, -1, 1])

  def project_gradient(self, g: np.ndarray, in_index: int | None,
                       out_index: int | None) -> np.ndarray:
    """g P^{o} of a depthwise meta-weight gradient `[k, k, M, 1]` (one side only).

    Args:
      g: the kernel's gradient.
      in_index: unused (a depthwise layer's input is its output's slot).
      out_index: the candidate, or None to return g unchanged.

    Returns:
      `[k, k, c]` on a searched side, else g.
    """
    del in_index
    p = self._numpy_projection(self._out, self.p, out_index)
    return g if p is None else np.einsum("hwM,Mc->hwc", g[..., 0], p)

  def call(self, inputs, index=0):
    return tf.nn.depthwise_conv2d(inputs, tf.cast(self.candidate_kernel(index), inputs.dtype),
                                  [1, self.strides, self.strides, 1], "SAME")

  def get_config(self):
    cfg = super().get_config()
    for key in ("in_candidates", "meta_in", "out_candidates", "meta_out"):
      cfg.pop(key)
    cfg.update(candidates=self._out.candidates, meta=self._out.meta, kernel_size=self.kernel_size, strides=self.strides,
               kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
    return cfg


class APSDense(APSLayer):
  """Classifier over a searched input width: kernel = Q^i^T W, W `[M_in, units]`."""

  def __init__(self, units, kernel_initializer="glorot_uniform", **kwargs):
    super().__init__(out_candidates=None, meta_out=units, **kwargs)
    self.units = int(units)
    self.kernel_initializer = keras.initializers.get(kernel_initializer)

  def build(self, input_shape=None):
    self.kernel = self.add_weight(name="kernel", shape=(self._in.meta, self.units),
                                  initializer=self.kernel_initializer, autocast=False)
    self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros",
                                autocast=False)
    self._build_projections()
    self.built = True

  def candidate_kernel(self, in_index=0, use_projection=None):
    """The classifier kernel of one input candidate.

    Args:
      in_index: the input candidate.
      use_projection: Q^T W (True) or a slice of W (False); default by sharing mode.

    Returns:
      `[c_i, units]`.
    """
    w = tf.convert_to_tensor(self.kernel)
    if use_projection is None:
      use_projection = not self._use_slicing()
    if not self._in.searched:
      return w
    if not use_projection:
      start, size = self._slice(self._in, in_index)
      return w[start:start + size]
    return tf.matmul(self._project(self._in, self.q, in_index), w, transpose_a=True)

  def project_gradient(self, g: np.ndarray, in_index: int | None,
                       out_index: int | None) -> np.ndarray:
    """Q^{i}^T g of the classifier's meta-weight gradient `[M_in, units]`.

    Args:
      g: the kernel's gradient.
      in_index: the input candidate, or None to return g unchanged.
      out_index: unused (the classes are not searched).

    Returns:
      `[c, units]` on a searched input, else g.
    """
    del out_index
    q = self._numpy_projection(self._in, self.q, in_index)
    return g if q is None else np.einsum("Iu,Iy->yu", g, q)

  def call(self, inputs, in_index=0):
    kernel = tf.cast(self.candidate_kernel(in_index), inputs.dtype)
    return tf.matmul(inputs, kernel) + tf.cast(self.bias, inputs.dtype)

  def get_config(self):
    cfg = super().get_config()
    cfg.pop("out_candidates"), cfg.pop("meta_out")
    cfg.update(units=self.units,
               kernel_initializer=keras.initializers.serialize(self.kernel_initializer))
    return cfg


_BN_STATE = threading.local()


@contextlib.contextmanager
def frozen_statistics() -> Iterator[None]:
  """BN in training mode inside this block normalises by the batch's statistics
  but leaves the moving averages untouched.

  The controller's reward forward uses it (`search.reward.bn="batch"`): the
  reward batch's statistics, as the reference does, without the reward split
  leaking into the statistics the supernet keeps. It acts when the layer's
  `call` runs, i.e. when a `tf.function` is traced; enter it inside the traced
  (replica) function. Thread-local, as replica functions may run in threads.
  """
  previous = getattr(_BN_STATE, "frozen", False)
  _BN_STATE.frozen = True
  try:
    yield
  finally:
    _BN_STATE.frozen = previous


class PerCandidateBatchNorm(keras.layers.Layer):
  """BatchNorm for a searched width: statistics per (input, output) candidate pair.

  Activation statistics depend on the sampled widths, so candidates cannot
  share BN (docs/method.md, "Search spaces"). A conv's output variance grows with its *input* width
  too, so the moving statistics are kept per (input candidate, output
  candidate) pair, as in the reference; mixing them over input widths leaves
  inference-mode BN (the controller's reward) badly off. The affine gamma/beta
  are per output candidate. Statistic rows are `[A_in * A, c_max]` (row
  `i * A + o`), affine rows `[A, c_max]`; candidate `o` uses `[:c_o]`. In
  static mode the padded channels are re-masked to zero after the affine.

  Args:
    candidates: output candidate widths (None: one fixed `width`).
    width: the fixed width when `candidates` is None.
    in_groups: number of input candidates the statistics are split by (1 for
      a fixed input, or a depthwise conv whose scale only its own width sets).
  """

  def __init__(self, candidates=None, width=None, in_groups=1, momentum=0.9, epsilon=1e-5,
               static_shapes=False, **kwargs):
    super().__init__(**kwargs)
    self.candidates = _candidates(candidates) or (int(width),)
    self.in_groups = int(in_groups)
    self.momentum = float(momentum)
    self.epsilon = float(epsilon)
    self.static_shapes = bool(static_shapes)
    self._widths = tf.constant(self.candidates, tf.int32)
    self._mask = tf.constant(sharing.column_mask(self.candidates))

  def build(self, input_shape=None):
    shape = (len(self.candidates), self.candidates[-1])
    stat_shape = (self.in_groups * len(self.candidates), self.candidates[-1])
    # Float32 throughout, also under a mixed policy (aps_tf/precision.py).
    self.gamma = self.add_weight(name="gamma", shape=shape, initializer="ones", autocast=False)
    self.beta = self.add_weight(name="beta", shape=shape, initializer="zeros", autocast=False)
    self.moving_mean = self._statistic("moving_mean", stat_shape, "zeros")
    self.moving_variance = self._statistic("moving_variance", stat_shape, "ones")
    self.built = True

  def _statistic(self, name, shape, initializer):
    """A moving statistic kept per replica and averaged when read across replicas.

    On-read synchronisation (what Keras 2's BatchNormalization used) makes the
    update a local assignment: no cross-replica merge inside the supernet's
    shortcut `tf.cond`, where tf.distribute forbids one.
    """
    with keras.name_scope(self.name, caller=self):
      var = keras.Variable(initializer=keras.initializers.get(initializer), shape=shape,
                           dtype=self.variable_dtype, trainable=False, aggregation="mean",
                           synchronization="on_read", autocast=False, name=name)
    self._track_variable(var)
    return var

  def stat_row(self, index, in_index=0):
    """Row of the moving statistics for output candidate `index` after input `in_index`.

    Args:
      index: the output candidate.
      in_index: the input candidate (grouped statistics), else 0.

    Returns:
      The row index into the moving mean and variance.
    """
    return in_index * len(self.candidates) + index

  def _row(self, var, row, index):
    if self.static_shapes:
      return select_row(var, row)
    return tf.convert_to_tensor(var)[row][:tf.gather(self._widths, index)]

  def call(self, inputs, index=0, training=False, in_index=0, update_gate=None):
    """`update_gate`: a 0/1 scalar; at 0 the moving statistics stay put (a branch
    computed but not taken, in the supernet's branch-free static path)."""
    dtype = inputs.dtype
    inputs = precision.to_float32(inputs)
    gamma, beta = self._row(self.gamma, index, index), self._row(self.beta, index, index)
    row = self.stat_row(index, in_index)
    if training:
      mean, var = batch_moments(inputs)
      if not getattr(_BN_STATE, "frozen", False):
        self._update(self.moving_mean, row, index, mean, update_gate)
        self._update(self.moving_variance, row, index, var, update_gate)
    else:
      mean = self._row(self.moving_mean, row, index)
      var = self._row(self.moving_variance, row, index)
    out = tf.nn.batch_normalization(inputs, mean, var, beta, gamma, self.epsilon)
    if self.static_shapes:
      out = out * select_row(self._mask, index)
    return tf.cast(out, dtype)

  def _update(self, variable, row, index, value, gate=None):
    table = tf.convert_to_tensor(variable)
    if self.static_shapes:
      # XLA-friendly (see `select_row`): the same values as the scatter below.
      old, live = select_row(table, row), select_row(self._mask, index)
    else:
      old, live = tf.gather(table, row), tf.gather(self._mask, index)
    pad = tf.shape(old)[0] - tf.shape(value)[0]
    value = tf.concat([value, tf.zeros([pad], value.dtype)], 0)
    new = old * self.momentum + value * (1.0 - self.momentum)
    if gate is not None:
      live = live * tf.cast(gate, live.dtype)
    new = live * new + (1.0 - live) * old
    if self.static_shapes:
      hit = tf.equal(tf.range(tf.shape(table)[0]), row)[:, None]
      variable.assign(tf.where(hit, new[None], table))
    else:
      variable.assign(tf.tensor_scatter_nd_update(table, [[row]], new[None]))

  def get_config(self):
    cfg = super().get_config()
    cfg.update(candidates=self.candidates, in_groups=self.in_groups, momentum=self.momentum,
               epsilon=self.epsilon, static_shapes=self.static_shapes)
    return cfg
