"""The APS supernet of a layer graph (an imported Keras model).

Every conv, depthwise conv and dense layer of the graph becomes one APS layer
(a meta-weight cut by P/Q per slot side); every BN becomes per-candidate BN per
channel part; the width-free layers (activations, pooling, padding, dropout,
rescaling) are copies of the user's own layers. As in `supernet.Supernet`, the
architecture is an int32 tensor of decision indices, so one traced step serves
every architecture.

An input made of several parts (a conv after a `Concatenate`) reads, per part,
that part's rows of the meta-weight: the input projection is block-diagonal
over the parts' projections. Such layers support ordinal and independent
sharing (transitional sharing needs one projection per side). Only the dynamic
path (no `static_shapes`) is implemented for graphs.

`copy_keras_weights` loads the user's weights so that the widest
architecture computes the user's model exactly (ordinal projections).
"""

from __future__ import annotations

import functools
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from aps_tf import errors
from aps_tf import layers
from aps_tf import precision
from aps_tf.models import graph as graph_lib
from aps_tf.models import supernet as supernet_lib

_OP_FNS = {"add": tf.add, "subtract": tf.subtract, "multiply": tf.multiply,
           "divide": tf.math.divide, "true_divide": tf.math.truediv}


def _slice_axis(w, axis: int, begin, size):
  """`w` restricted to `[begin, begin + size)` on `axis` (scalars may be tensors)."""
  rank = len(w.shape)
  begins = tf.one_hot(axis, rank, dtype=tf.int32) * tf.cast(begin, tf.int32)
  sizes = tf.where(tf.range(rank) == axis, tf.cast(size, tf.int32), -1)
  return tf.slice(w, begins, sizes)


class GraphAPSLayer(layers.APSLayer):
  """An APS conv, depthwise conv or dense layer whose input may have several parts.

  Args:
    kind: 'conv', 'depthwise' or 'dense'.
    in_parts: (slot, candidates or None, meta width) of every input part; for a
      depthwise conv these are also its output parts.
    out_part: (slot, candidates or None, meta width) of the output (conv, dense).
    kernel_size, strides, padding, dilation_rate: as the Keras layer's.
    use_bias: whether the layer has a bias (a meta-bias over the output meta width).
    activation: the Keras activation applied after the bias.
    spatial: dense only: how often the input channels repeat in the flattened input.
  """

  def __init__(self, kind, in_parts, out_part=None, kernel_size=(1, 1), strides=(1, 1),
               padding="valid", dilation_rate=(1, 1), use_bias=False, activation="linear",
               spatial=1, kernel_initializer="glorot_uniform", sharing_mode="ordinal",
               **kwargs):
    in_parts = [tuple(p) for p in in_parts]
    if kind == "depthwise":
      out_parts = in_parts
      first_in, first_out = (None, None, 1), in_parts[0]
    else:
      out_parts = [tuple(out_part)]
      first_in, first_out = in_parts[0], out_parts[0]
    super().__init__(in_candidates=first_in[1], meta_in=first_in[2],
                     out_candidates=first_out[1], meta_out=first_out[2],
                     sharing_mode=sharing_mode, **kwargs)
    if sharing_mode == "transitional" and len(in_parts) > 1:
      raise errors.ConfigError(
          f"layer {self.name}: transitional sharing is not supported for a layer whose "
          "input is a concatenation (use ordinal or independent)")
    self.kind = kind
    self.in_slots = [p[0] for p in in_parts]
    self.out_slots = [p[0] for p in out_parts]
    mode = self.sharing_mode
    if kind == "depthwise":
      self.in_sides = []
      self.out_sides = [self._out] + [layers.ChannelSide(c, m, mode) for _, c, m in out_parts[1:]]
    else:
      self.in_sides = [self._in] + [layers.ChannelSide(c, m, mode) for _, c, m in in_parts[1:]]
      self.out_sides = [self._out]
    self.kernel_size = tuple(int(k) for k in kernel_size)
    self.strides = tuple(int(s) for s in strides)
    self.padding = str(padding).upper()
    self.dilation_rate = tuple(int(d) for d in dilation_rate)
    self.use_bias = bool(use_bias)
    self.activation_name = activation
    self.activation = keras.activations.get(activation)
    self.spatial = int(spatial)
    self.kernel_initializer = keras.initializers.get(kernel_initializer)

  @staticmethod
  def _meta(sides) -> int:
    return int(sum(s.meta for s in sides))

  def build(self, input_shape=None):
    kh, kw = self.kernel_size
    m_out = self._meta(self.out_sides)
    if self.kind == "conv":
      shape = (kh, kw, self._meta(self.in_sides), m_out)
    elif self.kind == "depthwise":
      shape = (kh, kw, m_out, 1)
    else:
      shape = (self.spatial * self._meta(self.in_sides), m_out)
    self.kernel = self.add_weight(name="kernel", shape=shape,
                                  initializer=self.kernel_initializer, autocast=False)
    self.bias = self.add_weight(name="bias", shape=(m_out,), initializer="zeros",
                                autocast=False) if self.use_bias else None
    self._build_projections(in_side=self.kind != "depthwise")
    self.built = True

  # -- candidate weights ----------------------------------------------------
  def _cut(self, w, axis, sides, slots, idx):
    """Rows of every part's candidate on `axis`, concatenated (frozen projections)."""
    pieces, off = [], 0
    for side, slot in zip(sides, slots):
      if side.searched:
        i = idx[slot]
        pieces.append(_slice_axis(w, axis, off + side.starts[i], side.widths[i]))
      else:
        pieces.append(_slice_axis(w, axis, off, side.meta))
      off += side.meta
    return pieces[0] if len(pieces) == 1 else tf.concat(pieces, axis)

  def _projected(self) -> bool:
    return self.sharing_mode == "transitional"

  def candidate_kernel(self, idx):
    """The kernel at slot candidate indices `idx` (`[num_slots]`)."""
    return self._candidate(tf.convert_to_tensor(self.kernel), idx)

  def project_gradient(self, g: np.ndarray, in_index: int | None,
                       out_index: int | None) -> np.ndarray:
    """A meta-weight gradient seen on one candidate's kernel (the kernel map applied to g).

    The candidate kernel is linear in the meta-weight, so its map applied to
    the gradient is Q^T g P (transitional) or the candidate's block of g.

    Args:
      g: the gradient of the meta-weight kernel.
      in_index: the input candidate (None only for an unsearched input).
      out_index: the output candidate (None only for an unsearched output).

    Returns:
      The gradient on the candidate's kernel.

    Raises:
      ValueError: a layer whose input is a concatenation (several parts), or
        None for a searched side.
    """
    if len(self.in_slots) > 1 or len(self.out_slots) > 1:
      raise ValueError(f"layer {self.name}: the gradient of a layer over several channel "
                       "parts is not projected")
    idx = np.zeros(max(self.in_slots + self.out_slots) + 1, np.int32)
    for sides, slot, index in ((self.in_sides, self.in_slots[0], in_index),
                               (self.out_sides, self.out_slots[0], out_index)):
      if sides and sides[0].searched:
        if index is None:
          raise ValueError(f"layer {self.name}: slot {slot} is searched; give its candidate")
        idx[slot] = index
    return self._candidate(tf.convert_to_tensor(g, self.kernel.dtype), tf.constant(idx)).numpy()

  def _candidate(self, w, idx):
    if self.kind == "depthwise":
      if self._projected() and self._out.searched:
        kh, kw = self.kernel_size
        p = self._project(self._out, self.p, idx[self.out_slots[0]])
        return tf.reshape(tf.matmul(tf.reshape(w, [kh * kw, -1]), p), [kh, kw, -1, 1])
      return self._cut(w, 2, self.out_sides, self.out_slots, idx)
    if self.kind == "dense":
      m_out = w.shape[-1]
      w = tf.reshape(w, [self.spatial, -1, m_out])
      if self._projected() and self._in.searched:
        q = self._project(self._in, self.q, idx[self.in_slots[0]])
        w = tf.einsum("smu,mc->scu", w, q)
      else:
        w = self._cut(w, 1, self.in_sides, self.in_slots, idx)
      w = tf.reshape(w, [-1, m_out])
      if self._projected() and self._out.searched:
        return tf.matmul(w, self._project(self._out, self.p, idx[self.out_slots[0]]))
      return self._cut(w, 1, self.out_sides, self.out_slots, idx)
    if self._projected():
      q = self._project(self._in, self.q, idx[self.in_slots[0]]) if self._in.searched else None
      p = self._project(self._out, self.p, idx[self.out_slots[0]]) if self._out.searched else None
      return layers.project_kernel(w, q, p)
    w = self._cut(w, 2, self.in_sides, self.in_slots, idx)
    return self._cut(w, 3, self.out_sides, self.out_slots, idx)

  def candidate_bias(self, idx):
    if self.bias is None:
      return None
    b = tf.convert_to_tensor(self.bias)
    if self._projected() and self._out.searched:
      return tf.linalg.matvec(self._project(self._out, self.p, idx[self.out_slots[0]]), b,
                              transpose_a=True)
    return self._cut(b, 0, self.out_sides, self.out_slots, idx)

  def call(self, x, idx, linear=False):
    k = tf.cast(self.candidate_kernel(idx), x.dtype)
    if self.kind == "conv":
      y = tf.nn.conv2d(x, k, self.strides, self.padding, dilations=self.dilation_rate)
    elif self.kind == "depthwise":
      y = tf.nn.depthwise_conv2d(x, k, (1,) + self.strides + (1,), self.padding,
                                 dilations=self.dilation_rate)
    else:
      y = tf.matmul(x, k)
    if self.bias is not None:
      y = y + tf.cast(self.candidate_bias(idx), y.dtype)
    return y if linear else self.activation(y)

  def get_config(self):
    cfg = super().get_config()
    cfg.update(kind=self.kind, kernel_size=self.kernel_size, strides=self.strides,
               padding=self.padding.lower(), dilation_rate=self.dilation_rate,
               use_bias=self.use_bias, activation=self.activation_name, spatial=self.spatial)
    return cfg


class PartsBatchNorm(keras.layers.Layer):
  """Per-candidate BN over a tensor of several channel parts: one BN per part.

  BN is per channel, so BN of a concatenation is the concatenation of the
  parts' BNs.
  """

  def __init__(self, parts, in_slot=None, in_groups=1, momentum=0.9, epsilon=1e-3,
               **kwargs):
    super().__init__(**kwargs)
    self.slots = [p[0] for p in parts]
    self.searched = [p[1] is not None for p in parts]
    self.in_slot, self.in_groups = in_slot, int(in_groups)
    self.bns = []
    for k, (_, cands, meta) in enumerate(parts):
      bn = layers.PerCandidateBatchNorm(candidates=cands, width=meta,
                                        in_groups=in_groups if len(parts) == 1 else 1,
                                        momentum=momentum, epsilon=epsilon,
                                        name=f"{self.name}_part{k}")
      setattr(self, f"part{k}", bn)
      self.bns.append(bn)

  def build(self, input_shape=None):
    for bn in self.bns:
      bn.build()
    self.built = True

  def indices(self, k, idx):
    """(candidate index, input candidate index) of part `k`."""
    i = idx[self.slots[k]] if self.searched[k] else 0
    j = idx[self.in_slot] if (self.in_groups > 1 and len(self.bns) == 1) else 0
    return i, j

  def call(self, x, idx, widths, training=False):
    rank2 = len(x.shape) == 2
    if rank2:
      x = x[:, None, None, :]
    if len(self.bns) == 1:
      i, j = self.indices(0, idx)
      y = self.bns[0](x, i, training=training, in_index=j)
    else:
      xs = tf.split(x, tf.stack([widths[s] for s in self.slots]), axis=-1)
      ys = []
      for k, (bn, part) in enumerate(zip(self.bns, xs)):
        i, j = self.indices(k, idx)
        ys.append(bn(part, i, training=training, in_index=j))
      y = tf.concat(ys, -1)
    return y[:, 0, 0, :] if rank2 else y


def _keras_layer(node: graph_lib.Node):
  return keras.saving.deserialize_keras_object(dict(node.layer))


class GraphSupernet(supernet_lib.Supernet):
  """Weight-sharing supernet over a graph topology (`models.from_keras`).

  Same interface as `Supernet`: `net(images, arch, training=...)` gives logits
  (the model's final softmax left out), `aps_layers`, the Phi methods,
  `slot_indices` / `slot_widths` and `child_weights(arch)`.

  Args:
    topology: a `Topology` of family 'graph'.
    sharing_mode, noise_std, bn_momentum, seed: as `Supernet`.
    static_shapes: must be False (not implemented for graphs).
  """

  def __init__(self, topology, sharing_mode: str = "ordinal", noise_std: float = 0.0,
               static_shapes: bool = False, bn_momentum: float = 0.9, seed: int | None = 0,
               **kwargs):
    if topology.family != "graph":
      raise ValueError(f"GraphSupernet needs a graph topology, got family {topology.family!r}")
    if static_shapes:
      raise errors.ConfigError("search.static_shapes (the XLA path) is not supported for "
                               "an imported Keras model; set it to False")
    if sharing_mode == "independent":
      short = [d.name for d in topology.space.decisions if d.meta_width < sum(d.candidates)]
      if short:
        raise errors.ConfigError(
            f"independent sharing needs meta width >= the sum of the candidates (set "
            f"model.meta_width='sum' when importing); too narrow: {short[:3]}")
    super().__init__(topology, sharing_mode=sharing_mode, noise_std=noise_std,
                     static_shapes=False, bn_momentum=bn_momentum, seed=seed, **kwargs)
    self.graph = g = topology.graph
    self.parts: dict[str, keras.layers.Layer] = {}
    for k, node in enumerate(g.nodes):
      part = self._make(node)
      if part is not None:
        setattr(self, f"node{k}", part)
        self.parts[node.name] = part
    self.built = True

  def _part(self, slot):
    c, m = self._side(slot)
    return (slot, c, m)

  def _make(self, node: graph_lib.Node):
    g, cfg = self.graph, node.config
    if node.op in ("input", "add", "multiply", "concat", "flatten", "reshape", "scalar"):
      return None
    if node.op in graph_lib.WEIGHTED:
      src = g.node(node.inputs[0])
      in_parts = [self._part(s) for s in src.parts]
      seed = self._seed_for()
      init = cfg.get("depthwise_initializer") if node.op == "depthwise" else cfg.get(
          "kernel_initializer")
      init = keras.initializers.get(init) if init else "glorot_uniform"
      if seed is not None and hasattr(init, "seed"):
        init = init.__class__.from_config(dict(init.get_config(), seed=seed + 3))
      layer = GraphAPSLayer(
          node.op, in_parts, None if node.op == "depthwise" else self._part(node.parts[0]),
          kernel_size=cfg.get("kernel_size", (1, 1)), strides=cfg.get("strides", (1, 1)),
          padding=cfg.get("padding", "valid"),
          dilation_rate=cfg.get("dilation_rate", (1, 1)), use_bias=cfg.get("use_bias", True),
          activation=cfg.get("activation", "linear"), spatial=src.spatial,
          kernel_initializer=init, seed=seed, name=node.name, **self._common)
      layer.build()
      self.aps_layers.append(layer)
      return layer
    if node.op == "bn":
      src = g.node(node.inputs[0])
      in_slot, in_groups = None, 1
      if src.op in ("conv", "dense"):
        feeding = g.node(src.inputs[0]).parts
        sp = self.topology.space
        if len(feeding) == 1 and sp.slot_decision(feeding[0]) is not None:
          in_slot, in_groups = feeding[0], len(sp.slot_candidates(feeding[0]))
      bn = PartsBatchNorm([self._part(s) for s in node.parts], in_slot, in_groups,
                          momentum=self._bn_momentum, epsilon=cfg.get("epsilon", 1e-3),
                          name=node.name)
      bn.build()
      return bn
    layer = _keras_layer(node)
    if node.op == "normalize":
      layer.build((None,) + tuple(g.node(node.inputs[0]).shape))
    return layer

  # -- seams for the search -------------------------------------------------
  def searched_units(self) -> list[tuple[layers.APSLayer, int | None, int | None]]:
    """Every APS layer over one channel part with the slots its candidates come from.

    The gradient probes (`aps_tf.search.probes`) project each unit's
    gradient; a layer whose input is a concatenation (several parts) is left
    out of them.

    Returns:
      (layer, in-slot or None, out-slot or None) per layer, in build order;
      None where the side is not searched (or, depthwise, the input).
    """
    sp = self.topology.space
    out = []
    for layer in self.aps_layers:
      if len(layer.in_slots) > 1 or len(layer.out_slots) > 1:
        continue
      i = None if layer.kind == "depthwise" else layer.in_slots[0]
      o = layer.out_slots[0]
      out.append((layer, None if i is None or sp.slot_decision(i) is None else i,
                  None if sp.slot_decision(o) is None else o))
    return out

  # -- forward --------------------------------------------------------------
  def call(self, images, arch, training=False):
    idx = self.slot_indices(arch)
    widths = tf.gather(self._widths, idx, batch_dims=1)
    g = self.graph
    values = {}
    for node in g.nodes:
      if node.op == "input":
        values[node.name] = images
        continue
      xs = [values[i] for i in node.inputs]
      values[node.name] = self._apply(node, xs, idx, widths, training)
    return precision.to_float32(values[g.output])

  def _apply(self, node, xs, idx, widths, training):
    op, part = node.op, self.parts.get(node.name)
    strip = node.name == self.graph.softmax
    if op in graph_lib.WEIGHTED:
      return part(xs[0], idx, linear=strip) if strip else part(xs[0], idx)
    if op == "bn":
      return part(xs[0], idx, widths, training=training)
    if op == "add" and node.fn in (None, "add"):
      return functools.reduce(tf.add, xs)
    if op == "multiply" and node.fn in (None, "multiply"):
      return functools.reduce(tf.multiply, xs)
    if op in ("add", "multiply"):
      return _OP_FNS[node.fn](xs[0], xs[1])
    if op == "scalar":
      c = tf.constant(node.scalar, xs[0].dtype)
      return _OP_FNS[node.fn](c, xs[0]) if node.scalar_first else _OP_FNS[node.fn](xs[0], c)
    if op == "concat":
      return tf.concat(xs, -1)
    if op == "flatten":
      return tf.reshape(xs[0], [tf.shape(xs[0])[0], -1])
    if op == "reshape":
      target = [int(d) for d in node.config["target_shape"]][:-1]
      return tf.reshape(xs[0], [tf.shape(xs[0])[0]] + target + [tf.shape(xs[0])[-1]])
    if op == "act" and strip:
      return xs[0]
    if op == "merge":
      return part(xs, training=training)
    return part(xs[0], training=training)

  # -- child weights --------------------------------------------------------
  def child_weights(self, arch: Sequence[int]) -> dict[str, list[np.ndarray]]:
    """Per layer name of the dense child (`graph_dense.build`), its weights at `arch`."""
    idx = self.slot_indices([int(a) for a in arch]).numpy()
    out: dict[str, list[np.ndarray]] = {}
    for node in self.graph.nodes:
      part = self.parts.get(node.name)
      if isinstance(part, GraphAPSLayer):
        ws = [part.candidate_kernel(idx).numpy()]
        if part.bias is not None:
          ws.append(part.candidate_bias(idx).numpy())
        out[node.name] = ws
      elif isinstance(part, PartsBatchNorm):
        rows = {"gamma": [], "beta": [], "moving_mean": [], "moving_variance": []}
        for k, bn in enumerate(part.bns):
          i, j = (int(v) for v in part.indices(k, idx))
          c = bn.candidates[i]
          stat = bn.stat_row(i, j)
          rows["gamma"].append(np.asarray(bn.gamma)[i, :c])
          rows["beta"].append(np.asarray(bn.beta)[i, :c])
          rows["moving_mean"].append(np.asarray(bn.moving_mean)[stat, :c])
          rows["moving_variance"].append(np.asarray(bn.moving_variance)[stat, :c])
        cfg = node.config
        keys = (["gamma"] if cfg.get("scale", True) else []) + (
            ["beta"] if cfg.get("center", True) else []) + ["moving_mean", "moving_variance"]
        out[node.name] = [np.concatenate(rows[k]) for k in keys]
      elif part is not None and part.weights:
        out[node.name] = [np.asarray(w) for w in part.get_weights()]
    return out


# -- the user's weights -----------------------------------------------------
def channel_orders(net: GraphSupernet, model, importance: str | None = None) -> list[np.ndarray]:
  """Per slot, the order of the user's channels to copy (identity unless `importance`).

  importance='l1': every searchable group's channels sorted by the summed L1
  norm of the output filters of the group's convs and dense layers, strongest
  first, so that the narrower ordinal candidates start from the strongest
  channels. One order per group, applied to every slot of it (tied channels
  stay tied) and, through `copy_keras_weights`, to every consumer's input.
  """
  g = net.graph
  orders = [np.arange(w) for w in g.slot_widths]
  if importance in (None, "none"):
    return orders
  if importance != "l1":
    raise errors.ConfigError(f"unknown channel importance {importance!r}; expected "
                             "'none' or 'l1'")
  score: dict[int, np.ndarray] = {}
  for node in g.nodes:
    if node.op in ("conv", "dense"):
      kernel = np.asarray(model.get_layer(node.name).kernel)
      l1 = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(0)
      root = g.groups[node.parts[0]]
      score[root] = score.get(root, 0) + l1
  for slots in g.searchable_groups():
    s = score.get(g.groups[slots[0]])
    if s is None:
      continue
    order = np.argsort(-s, kind="stable")
    for slot in slots:
      orders[slot] = order
  return orders


def _part_rows(sides, slots, orders, widths_user):
  """Per part and candidate: (target meta rows, source user rows)."""
  out, off, uoff = [], 0, 0
  for side, slot in zip(sides, slots):
    order = orders[slot] + uoff
    if side.searched:
      starts = (np.cumsum((0,) + side.candidates[:-1]) if side.mode == "independent"
                else np.zeros(len(side.candidates), np.int64))
      for start, c in zip(starts, side.candidates):
        out.append((off + start + np.arange(c), order[:c]))
    else:
      out.append((off + np.arange(side.meta), order[:side.meta]))
    off += side.meta
    uoff += widths_user[slot]
  return out


def copy_keras_weights(net: GraphSupernet, model, importance: str | None = None) -> list[str]:
  """Copies the user's weights and BN statistics into the supernet.

  The user's channels (in the order `channel_orders` gives) go into the first
  meta rows of every candidate (ordinal: the same rows for every candidate, so
  the widest architecture computes `model` exactly; independent: the first
  `c` channels into each candidate's own rows). Meta rows beyond the user's
  width keep their initial values.

  Args:
    net: the graph supernet of `model`'s topology.
    model: the user's Keras model (the one `from_keras` read).
    importance: None / 'none', or 'l1' (see `channel_orders`).

  Returns:
    The names of the layers copied.
  """
  g = net.graph
  orders = channel_orders(net, model, importance)
  user_w = g.slot_widths
  done = []
  for node in g.nodes:
    part = net.parts.get(node.name)
    if part is None or not (part.weights or isinstance(part, PartsBatchNorm)):
      continue
    user = model.get_layer(node.name)
    if isinstance(part, GraphAPSLayer):
      _copy_aps(part, user, orders, user_w)
    elif isinstance(part, PartsBatchNorm):
      _copy_bn(part, user, orders, user_w)
    else:
      part.set_weights(user.get_weights())
    done.append(node.name)
  return done


def _copy_aps(part: GraphAPSLayer, user, orders, user_w):
  kernel = np.array(part.kernel)
  u = np.asarray(user.kernel)
  outs = _part_rows(part.out_sides, part.out_slots, orders, user_w)
  if part.kind == "depthwise":
    for tgt, src in outs:
      kernel[:, :, tgt, :] = u[:, :, src, :]
  else:
    ins = _part_rows(part.in_sides, part.in_slots, orders, user_w)
    if part.kind == "dense":
      m_in = sum(s.meta for s in part.in_sides)
      kernel = kernel.reshape(part.spatial, m_in, -1)
      u = u.reshape(part.spatial, -1, u.shape[-1])
    for ot, os_ in outs:
      for it, is_ in ins:
        if part.kind == "dense":
          kernel[:, it[:, None], ot[None, :]] = u[:, is_[:, None], os_[None, :]]
        else:
          kernel[:, :, it[:, None], ot[None, :]] = u[:, :, is_[:, None], os_[None, :]]
    kernel = kernel.reshape(part.kernel.shape)
  part.kernel.assign(kernel)
  if part.bias is not None:
    bias, ub = np.array(part.bias), np.asarray(user.bias)
    for tgt, src in outs:
      bias[tgt] = ub[src]
    part.bias.assign(bias)


def _copy_bn(part: PartsBatchNorm, user, orders, user_w):
  uoff = 0
  user_vals = {"gamma": user.gamma, "beta": user.beta, "moving_mean": user.moving_mean,
               "moving_variance": user.moving_variance}
  width = int(np.asarray(user.moving_mean).shape[0])
  defaults = {"gamma": np.ones(width, np.float32), "beta": np.zeros(width, np.float32)}
  user_vals = {k: (np.asarray(v) if v is not None else defaults[k]) for k, v in user_vals.items()}
  for slot, bn in zip(part.slots, part.bns):
    order = orders[slot] + uoff
    for name, var in (("gamma", bn.gamma), ("beta", bn.beta),
                      ("moving_mean", bn.moving_mean), ("moving_variance", bn.moving_variance)):
      table = np.array(var)
      for a, c in enumerate(bn.candidates):
        rows = [a] if name in ("gamma", "beta") else [bn.stat_row(a, j)
                                                      for j in range(bn.in_groups)]
        for r in rows:
          table[r, :c] = user_vals[name][order[:c]]
      var.assign(table)
    uoff += user_w[slot]


def init_from_config(net, model_cfg, model=None) -> list[str]:
  """Starts a graph supernet from the user's weights when the config asks for it.

  Config keys: `model.init_from` ('keras' copies the weights of
  `model.keras_file`, or of `model` when given; None or '' leaves the
  initialisers' values) and `model.channel_order` ('none' or 'l1', see
  `channel_orders`).

  Returns:
    The names of the layers copied (empty when nothing was copied).

  Raises:
    ConfigError: an unknown `init_from` or `channel_order`, or `init_from`
      set for a supernet that is not a graph's.
  """
  init_from = model_cfg.get("init_from") or None
  if init_from is None:
    return []
  if init_from != "keras":
    raise errors.ConfigError(f"model.init_from: expected 'keras' or None, got {init_from!r}")
  if not isinstance(net, GraphSupernet):
    raise errors.ConfigError("model.init_from='keras' needs model.keras_file (an imported "
                             "Keras model)")
  if model is None:
    from aps_tf.models import keras_import  # pylint: disable=g-import-not-at-top
    model = keras_import.load_keras_file(model_cfg.keras_file)
  return copy_keras_weights(net, model, model_cfg.get("channel_order") or None)
