"""The APS supernet: a topology interpreted with APS layers.

`Supernet(images, arch)` takes the architecture as an int32 tensor of decision
indices, so one traced step function serves every architecture. Each conv
receives the candidate indices of its input and output slots, gathered from
`arch` inside the graph.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from aps_tf import layers
from aps_tf import precision
from aps_tf import schema
from aps_tf import transition
from aps_tf.models import topology as topo


class _ConvBN(keras.layers.Layer):
  """APS conv (or depthwise) + per-candidate BN (or none) + optional activation."""

  def __init__(self, conv: layers.APSLayer, bn: layers.PerCandidateBatchNorm, activation,
               in_slot: int, out_slot: int, depthwise: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.conv, self.bn = conv, bn
    self.activation = activation
    self.in_slot, self.out_slot, self.depthwise = in_slot, out_slot, depthwise

  def call(self, x, idx, training=False, update_gate=None):
    if self.depthwise:
      x = self.conv(x, idx[self.out_slot])
    else:
      x = self.conv(x, idx[self.in_slot], idx[self.out_slot])
    if self.bn is not None:
      x = self.bn(x, idx[self.out_slot], training=training, in_index=self.bn_in_index(idx),
                  update_gate=update_gate)
    return self.activation(x) if self.activation is not None else x

  def bn_in_index(self, idx):
    """The input candidate that selects the BN statistics (0 when not searched)."""
    return idx[self.in_slot] if self.bn.in_groups > 1 else 0


SUPERNET_SHORTCUTS = schema.SUPERNET_SHORTCUTS
META_INITS = schema.META_INITS


class _PairShortcut(keras.layers.Layer):
  """The reference's supernet shortcut: a plain 1x1 conv + BN per (input, output)
  candidate pair, on every residual block (equal widths and stride 1 included).

  Not an APS layer: no meta-weight, no projection, outside Phi. Kernels are
  stored zero-padded, row `i * A_out + o` of `[A_in * A_out, 1, 1, c_in_max,
  c_out_max]`; each pair's live `[c_in, c_out]` block is initialised as its own
  conv (the given initializer over that pair's fan-in), and its BN (affine and
  statistics) is the pair's row of a `PerCandidateBatchNorm`.
  """

  def __init__(self, in_candidates, out_candidates, stride: int, kernel_init,
               bn_momentum: float, in_slot: int, out_slot: int, seed=None, **kwargs):
    super().__init__(**kwargs)
    self.in_candidates = tuple(int(c) for c in in_candidates)
    self.out_candidates = tuple(int(c) for c in out_candidates)
    self.stride = int(stride)
    self.in_slot, self.out_slot = in_slot, out_slot
    self._kernel_init = kernel_init
    self._seed = seed
    self._in_w = tf.constant(self.in_candidates, tf.int32)
    self._out_w = tf.constant(self.out_candidates, tf.int32)
    self.bn = layers.PerCandidateBatchNorm(
        candidates=self.out_candidates * len(self.in_candidates), momentum=bn_momentum,
        name=kwargs.get("name", "shortcut") + "_bn")

  def _initial_kernel(self) -> np.ndarray:
    a_in, a_out = len(self.in_candidates), len(self.out_candidates)
    k = np.zeros((a_in * a_out, 1, 1, max(self.in_candidates), max(self.out_candidates)),
                 np.float32)
    for i, ci in enumerate(self.in_candidates):
      for o, co in enumerate(self.out_candidates):
        seed = None if self._seed is None else self._seed + 1000 * i + o
        init = self._kernel_init(seed)
        k[i * a_out + o, :, :, :ci, :co] = np.asarray(init((1, 1, ci, co)))
    return k

  def build(self, input_shape=None):
    k = self._initial_kernel()
    self.kernel = self.add_weight(name="kernel", shape=k.shape,
                                  initializer=keras.initializers.Constant(k))
    self.bn.build()
    self.built = True

  def pair(self, idx):
    """Row of (input, output) candidate pair of `idx` (slot indices)."""
    i = idx[self.in_slot] if self.in_slot >= 0 else 0
    return i * len(self.out_candidates) + idx[self.out_slot], i, idx[self.out_slot]

  def call(self, x, idx, training=False):
    row, i, o = self.pair(idx)
    k = tf.convert_to_tensor(self.kernel)[row][:, :, :self._in_w[i], :self._out_w[o]]
    y = tf.nn.conv2d(x, tf.cast(k, x.dtype), self.stride, "SAME")
    return self.bn(y, row, training=training)


class _Block(keras.layers.Layer):
  """Holds a block's named parts as attributes, so checkpoints track them."""

  def __init__(self, parts: dict, **kwargs):
    super().__init__(**kwargs)
    self.part_names = tuple(parts)
    for key, layer in parts.items():
      setattr(self, key, layer)

  def __getitem__(self, key):
    return getattr(self, key)

  def __contains__(self, key):
    return key in self.part_names

  def items(self):
    return [(k, getattr(self, k)) for k in self.part_names]


class Supernet(keras.Model):
  """Weight-sharing supernet over a `Topology`'s search space.

  Args:
    topology: the network and its decisions (`topology.build_topology`).
    sharing_mode: 'ordinal' (APS-O), 'independent' (APS-I) or 'transitional' (APS-T).
    noise_std: N(0, sigma^2) added to transitional projections at init.
    static_shapes: pad every tensor to the largest candidate (XLA/TPU path).
    bn_momentum: moving-average momentum of the per-candidate BN.
    seed: seeds the meta-weight initializers and the projection noise (None:
      unseeded).
    shortcut: 'aps' (identity when the sampled widths match, else one APS 1x1
      conv + BN inside Phi) or 'pairwise' (the reference's: a plain 1x1 conv +
      BN per (input, output) candidate pair on every residual block, outside
      Phi; dynamic shapes only). Retrained children use the dense rule either way.
    meta_init: meta-weight initializer, 'he_normal' or 'kaiming_uniform' (the
      reference's: U(+-1/sqrt(fan_in)), PyTorch's default kaiming_uniform with
      a=sqrt(5), i.e. Keras VarianceScaling(1/3, 'fan_in', 'uniform')); the
      classifier and the pairwise shortcuts follow it too (glorot_uniform for
      the classifier with 'he_normal').

  Raises:
    ValueError: an unknown `shortcut` or `meta_init`, or 'pairwise' with static shapes.
  """

  def __init__(self, topology: topo.Topology, sharing_mode: str = "ordinal",
               noise_std: float = 0.0, static_shapes: bool = False, bn_momentum: float = 0.9,
               seed: int | None = 0, shortcut: str = "aps", meta_init: str = "he_normal",
               **kwargs):
    super().__init__(**kwargs)
    if shortcut not in SUPERNET_SHORTCUTS:
      raise ValueError(f"unknown supernet shortcut {shortcut!r}; expected one of "
                       f"{SUPERNET_SHORTCUTS}")
    if meta_init not in META_INITS:
      raise ValueError(f"unknown meta_init {meta_init!r}; expected one of {META_INITS}")
    if shortcut == "pairwise" and static_shapes:
      raise ValueError("the 'pairwise' supernet shortcut needs dynamic shapes "
                       "(static_shapes=False)")
    self.shortcut = shortcut
    self.meta_init = meta_init
    self.topology = topology
    self.sharing_mode = sharing_mode
    self.static_shapes = static_shapes
    self._slot_to_decision = tf.constant(topology.space.slot_to_decision_index())
    self._widths = tf.constant(
        [list(topology.space.slot_candidates(s)) + [0] * (
            self._max_candidates() - len(topology.space.slot_candidates(s)))
         for s in range(topology.num_slots)], tf.int32)
    self._seed = seed
    self._common = dict(sharing_mode=sharing_mode, noise_std=noise_std,
                        static_shapes=static_shapes)
    self._bn_momentum = bn_momentum
    self._act = keras.activations.relu6 if topology.activation == "relu6" else tf.nn.relu
    self.aps_layers: list[layers.APSLayer] = []
    # Keras 3 lists are not checkpoint dependencies: every block is also an
    # attribute of its own, so tf.train.Checkpoint sees all variables.
    self.units = []
    for i, b in enumerate(topology.blocks):
      unit = _Block(self._make_block(b), name=f"block{i}")
      setattr(self, f"block{i}", unit)
      self.units.append(unit)
    # Every shape is known from the search space: create all variables now, so
    # optimizers and checkpoints can be built before the first step.
    for unit in self.units:
      for _, part in unit.items():
        for leaf in ([part.conv, part.bn] if isinstance(part, _ConvBN) else [part]):
          if leaf is not None:
            leaf.build()
        part.built = True
      unit.built = True
    self.built = True

  def _max_candidates(self) -> int:
    sp = self.topology.space
    return max(len(sp.slot_candidates(s)) for s in range(sp.num_slots))

  # -- construction ---------------------------------------------------------
  def _side(self, slot: int | None):
    """(candidates or None, meta width) of a slot; None slot = the image input."""
    if slot is None:
      return None, self.topology.input_shape[-1]
    sp = self.topology.space
    if sp.slot_decision(slot) is None:
      return None, sp.fixed[slot]
    return sp.slot_candidates(slot), sp.slot_meta_width(slot)

  def _seed_for(self) -> int | None:
    return None if self._seed is None else self._seed + 7 * len(self.aps_layers)

  def _init(self, kind: str = "he_normal"):
    """A kernel initializer seeded per layer, so `seed` fixes the whole supernet."""
    seed = self._seed_for()
    seed = None if seed is None else seed + 3
    if self.meta_init == "kaiming_uniform":
      kind = "kaiming_uniform"
    return _initializer(kind, seed)

  def _conv_bn(self, name, kernel, stride, in_slot, out_slot, act=True, depthwise=False,
               use_bn=True):
    out_c, out_m = self._side(out_slot)
    if depthwise:
      conv = layers.APSDepthwiseConv2D(kernel, stride, candidates=out_c, meta=out_m,
                                       kernel_initializer=self._init(),
                                       seed=self._seed_for(), name=name, **self._common)
    else:
      in_c, in_m = self._side(in_slot)
      conv = layers.APSConv2D(kernel, stride, in_candidates=in_c, out_candidates=out_c,
                              meta_in=in_m, meta_out=out_m, seed=self._seed_for(),
                              kernel_initializer=self._init(), name=name, **self._common)
    self.aps_layers.append(conv)
    bn_c, bn_m = self._side(out_slot)
    in_groups = 1 if depthwise else len(self._side(in_slot)[0] or (0,))
    bn = layers.PerCandidateBatchNorm(candidates=bn_c, width=bn_m, in_groups=in_groups,
                                      momentum=self._bn_momentum,
                                      static_shapes=self.static_shapes,
                                      name=name + "_bn") if use_bn else None
    in_slot = -1 if in_slot is None else in_slot
    return _ConvBN(conv, bn, self._act if act else None, in_slot, out_slot, depthwise,
                   name=name + "_unit")

  def _make_block(self, block) -> dict:
    if isinstance(block, topo.Stem):
      c = block.conv
      return {"stem": self._conv_bn(c.name, c.kernel, c.stride, None, c.slot)}
    if isinstance(block, topo.BasicBlock):
      c1, c2 = block.conv1, block.conv2
      unit = {"conv1": self._conv_bn(c1.name, 3, c1.stride, block.in_slot, c1.slot),
              "conv2": self._conv_bn(c2.name, 3, 1, c1.slot, c2.slot, act=False)}
      if self.shortcut == "pairwise":
        unit["shortcut"] = self._pair_shortcut(block.name + "_shortcut", c1.stride,
                                               block.in_slot, c2.slot)
      elif not self._always_identity(block):
        # As the dense child (topology.shortcut_kind): a strided block with
        # 'avgpool_conv' pools, then runs a stride-1 1x1 conv without BN.
        pooled = c1.stride != 1 and self.topology.downsample_shortcut == "avgpool_conv"
        unit["shortcut"] = self._conv_bn(block.name + "_shortcut", 1,
                                         1 if pooled else c1.stride, block.in_slot, c2.slot,
                                         act=False, use_bn=not pooled)
      return unit
    if isinstance(block, topo.InvertedResidual):
      unit = {}
      if block.expand is not None:
        e = block.expand
        unit["expand"] = self._conv_bn(e.name, 1, 1, block.in_slot, e.slot)
      dw = topo.depthwise_slot(block)
      unit["depthwise"] = self._conv_bn(block.name + "_depthwise", 3, block.depthwise_stride,
                                        dw, dw, depthwise=True)
      unit["project"] = self._conv_bn(block.project.name, 1, 1, dw, block.project.slot,
                                      act=False)
      if block.residual and self.shortcut == "pairwise":
        unit["shortcut"] = self._pair_shortcut(block.name + "_shortcut", 1, block.in_slot,
                                               block.project.slot)
      return unit
    if isinstance(block, topo.Head):
      unit = {}
      in_slot = block.in_slot
      if block.conv is not None:
        unit["conv"] = self._conv_bn(block.conv.name, 1, 1, in_slot, block.conv.slot)
        in_slot = block.conv.slot
      in_c, in_m = self._side(in_slot)
      dense = layers.APSDense(block.num_classes, in_candidates=in_c, meta_in=in_m,
                              kernel_initializer=self._init("glorot_uniform"),
                              seed=self._seed_for(), name="classifier", **self._common)
      self.aps_layers.append(dense)
      unit["classifier"] = dense
      return unit
    raise TypeError(f"unknown block {block!r}")

  def _pair_shortcut(self, name, stride, in_slot, out_slot) -> _PairShortcut:
    in_c, in_m = self._side(in_slot)
    out_c, out_m = self._side(out_slot)
    seed = self._seed_for()
    kind = "kaiming_uniform" if self.meta_init == "kaiming_uniform" else "he_normal"
    return _PairShortcut(in_c or (in_m,), out_c or (out_m,), stride,
                         lambda s: _initializer(kind, s), self._bn_momentum,
                         -1 if in_slot is None else in_slot, out_slot,
                         seed=None if seed is None else seed + 5, name=name)

  def _always_identity(self, block: topo.BasicBlock) -> bool:
    sp = self.topology.space
    d_in, d_out = sp.slot_decision(block.in_slot), sp.slot_decision(block.conv2.slot)
    same_candidates = (sp.slot_candidates(block.in_slot) ==
                       sp.slot_candidates(block.conv2.slot))
    same = same_candidates and ((d_in is not None and d_in == d_out) or (
        d_in is None and d_out is None))
    return block.conv1.stride == 1 and same

  # -- forward --------------------------------------------------------------
  def slot_indices(self, arch) -> tf.Tensor:
    """Candidate index of every slot, from decision indices.

    Args:
      arch: `[num_decisions]` int decision indices.

    Returns:
      `[num_slots]` int32.
    """
    arch = tf.cast(tf.convert_to_tensor(arch), tf.int32)
    return tf.gather(tf.concat([arch, [0]], 0), self._slot_to_decision)

  def call(self, images, arch, training=False):
    slots = self.slot_indices(arch)
    # Per-slot scalars, unstacked once: indexing the tensors per unit would
    # trace a strided slice (and its three bounds) at every use.
    idx = tf.unstack(slots)
    widths = tf.unstack(tf.gather(self._widths, slots, batch_dims=1))
    x = images
    for block, unit in zip(self.topology.blocks, self.units):
      if isinstance(block, topo.Stem):
        x = unit["stem"](x, idx, training=training)
        if block.max_pool:
          x = tf.nn.max_pool2d(x, 3, 2, "SAME")
      elif isinstance(block, topo.BasicBlock):
        x = self._basic(block, unit, x, idx, widths, training)
      elif isinstance(block, topo.InvertedResidual):
        y = x
        if "expand" in unit:
          y = unit["expand"](y, idx, training=training)
        y = unit["depthwise"](y, idx, training=training)
        y = unit["project"](y, idx, training=training)
        if "shortcut" in unit:
          x = y + unit["shortcut"](x, idx, training=training)
        else:
          x = x + y if block.residual else y
      else:
        if "conv" in unit:
          x = unit["conv"](x, idx, training=training)
        x = tf.reduce_mean(x, axis=[1, 2])
        x = unit["classifier"](x, idx[block.in_slot if block.conv is None else block.conv.slot])
    return precision.to_float32(x)  # logits in float32 under a mixed policy

  def _basic(self, block, unit, x, idx, widths, training):
    y = unit["conv1"](x, idx, training=training)
    y = unit["conv2"](y, idx, training=training)
    if "shortcut" not in unit:
      shortcut = x
    elif self.shortcut == "pairwise":
      shortcut = unit["shortcut"](x, idx, training=training)
    elif block.conv1.stride != 1:
      if self.topology.downsample_shortcut == "avgpool_conv":
        s = block.conv1.stride
        x = tf.nn.avg_pool2d(x, s, s, "SAME")
      shortcut = unit["shortcut"](x, idx, training=training)
    elif self.static_shapes:
      # Branch-free for XLA: XLA:CPU runs a convolution inside a conditional
      # (and its gradient) far slower than outside one (measured: seconds per
      # taken 1x1 branch at batch 128). Both run; the identity or the
      # projection is selected by a 0/1 factor (exact, the other's gradient is
      # 0), and the projection's BN statistics move only when it is taken.
      take = tf.cast(tf.not_equal(widths[block.in_slot], widths[block.conv2.slot]), y.dtype)
      proj = unit["shortcut"](x, idx, training=training, update_gate=take)
      shortcut = take * proj + (1.0 - take) * self._fit(x, y)
    else:
      # Identity when the sampled widths match, else the 1x1 projection; only
      # the taken branch runs.
      shortcut = tf.cond(
          tf.equal(widths[block.in_slot], widths[block.conv2.slot]),
          lambda: self._fit(x, y),
          lambda: unit["shortcut"](x, idx, training=training))
    return tf.nn.relu(y + shortcut)

  def _fit(self, x, like):
    """Identity shortcut; in static mode pads/cuts channels to `like`'s max width."""
    if not self.static_shapes or x.shape[-1] == like.shape[-1]:
      return x
    c = like.shape[-1]
    if x.shape[-1] > c:
      return x[..., :c]
    return tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, c - x.shape[-1]]])

  def pair_shortcuts(self) -> list[_PairShortcut]:
    """The 'pairwise' shortcut layers (plain convs, weight-decayed like the APS kernels)."""
    return [part for unit in self.units for _, part in unit.items()
            if isinstance(part, _PairShortcut)]

  # -- seams for the search -------------------------------------------------
  def searched_units(self) -> list[tuple[layers.APSLayer, int | None, int | None]]:
    """Every APS layer with the slots its candidate indices come from.

    Returns:
      (layer, in-slot or None, out-slot or None) per APS layer, in build
      order; None where the side takes no candidate index (a fixed or
      depthwise input, the classifier's classes).
    """
    out = []
    for block, unit in zip(self.topology.blocks, self.units):
      for _, part in unit.items():
        if isinstance(part, _ConvBN):
          out.append((part.conv, None if part.depthwise or part.in_slot < 0 else part.in_slot,
                      part.out_slot))
        elif isinstance(part, _PairShortcut):
          continue  # plain convs, not searched layers
        else:  # APSDense
          slot = block.in_slot if block.conv is None else block.conv.slot
          out.append((part, slot, None))
    return out

  def batch_norm_layers(self) -> list[layers.PerCandidateBatchNorm]:
    """Every per-candidate BN layer (the search synchronises their statistics).

    Returns:
      The layers, in build order.
    """
    return [l for l in self._flatten_layers() if isinstance(l, layers.PerCandidateBatchNorm)]

  # -- sharing --------------------------------------------------------------
  def projection_variables(self) -> list[tuple[keras.Variable, tf.Tensor]]:
    """(variable, column mask) of every searched projection side.

    Returns:
      The pairs the Phi step updates.
    """
    return [pm for layer in self.aps_layers for pm in layer.projections]

  def phi_per_layer(self) -> dict[str, tf.Tensor]:
    """Phi of every APS layer.

    Returns:
      {layer name: scalar tensor}.
    """
    return {layer.name: layer.phi() for layer in self.aps_layers}

  def phi(self) -> tf.Tensor:
    """Model-level Phi (exact Eq. 4): the sum over searched layers.

    Returns:
      A scalar tensor.
    """
    return tf.add_n(list(self.phi_per_layer().values()))

  def phi_step(self, lr, objective: str = "exact", weight: float = 1.0) -> tf.Tensor:
    """One momentum-free transition step (see `aps_tf.transition`).

    The search uses a `transition.PhiOptimizer` built from its config (with
    momentum and weight decay); this is the plain projected step.

    Args:
      lr: the step size tau.
      objective: 'exact' or 'reference' (what each side minimises).
      weight: the weight of the Phi loss.

    Returns:
      Phi before the step.
    """
    return transition.PhiOptimizer(self.aps_layers, objective, lr=lr, weight=weight).step()

  # -- child weights --------------------------------------------------------
  def child_weights(self, arch: Sequence[int]) -> dict[str, list[np.ndarray]]:
    """The candidate weights of `arch`, by dense-child layer name.

    Used to start retraining from the supernet instead of from scratch.

    Args:
      arch: decision indices.

    Returns:
      {layer name: weights in Keras order}.
    """
    arch = [int(a) for a in arch]
    idx = self.slot_indices(arch).numpy()
    widths = self.topology.space.widths(arch)
    out: dict[str, list[np.ndarray]] = {}
    for block, unit in zip(self.topology.blocks, self.units):
      for key, part in unit.items():
        if isinstance(part, layers.APSDense):
          k = part.candidate_kernel(idx[block.in_slot if block.conv is None else block.conv.slot],
                                    use_projection=True)
          out[part.name] = [k.numpy(), part.bias.numpy()]
          continue
        if key == "shortcut" and (not isinstance(block, topo.BasicBlock) or topo.shortcut_kind(
            self.topology, block, widths) is None):
          continue  # identity in the child (a MobileNetV2 residual is always identity)
        if isinstance(part, _PairShortcut):
          # The pair's plain 1x1 kernel (and BN where the child has one).
          row, i, o = (int(v) for v in part.pair(idx))
          c_in, c_out = part.in_candidates[i], part.out_candidates[o]
          name = block.name + "_shortcut"
          out[name] = [part.kernel.numpy()[row][:, :, :c_in, :c_out]]
          if topo.shortcut_kind(self.topology, block, widths) == "conv_bn":
            bn = part.bn
            out[name + "_bn"] = [np.asarray(v)[row, :c_out] for v in (
                bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance)]
          continue
        conv, bn = part.conv, part.bn
        o = idx[part.out_slot]
        if part.depthwise:
          k = conv.candidate_kernel(o, use_projection=True)
        else:
          i = idx[part.in_slot] if part.in_slot >= 0 else 0
          k = conv.candidate_kernel(i, o, use_projection=True)
        c = k.shape[-2] if part.depthwise else k.shape[-1]
        out[conv.name] = [k.numpy()]
        if bn is None:
          continue
        row = bn.stat_row(o, idx[part.in_slot] if bn.in_groups > 1 else 0)
        out[bn.name] = ([np.asarray(v)[o, :c] for v in (bn.gamma, bn.beta)] +
                        [np.asarray(v)[row, :c] for v in (bn.moving_mean, bn.moving_variance)])
    return out


def _initializer(kind: str, seed):
  """Keras initializer by name; 'kaiming_uniform' is PyTorch's conv/linear default."""
  if kind == "kaiming_uniform":
    return keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform", seed=seed)
  return {"he_normal": keras.initializers.HeNormal,
          "glorot_uniform": keras.initializers.GlorotUniform}[kind](seed=seed)
