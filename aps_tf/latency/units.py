"""The timed units of a network: what a latency table has one entry family for.

A *unit* is the smallest piece of the dense child whose latency depends on at
most two widths (its input and its output width):

  * `conv`: Conv2D + BN [+ activation], as `dense.build` writes it (the
    converter folds BN and fuses the activation, so the three are one op);
  * `shortcut`: a ResNet 1x1 projection + BN; present only for the width
    pairs `topology.needs_projection` asks for (its entry is 0 otherwise);
  * `depthwise`: DepthwiseConv2D + BN + activation (one width);
  * `add`: the residual Add [+ ReLU] (one width);
  * `maxpool`: the ResNet-18 stem pool (one width);
  * `head`: global average pooling + the classifier (one width).

`units(topology)` walks the topology like the dense child and the FLOPs
counter do (same blocks, same strides), so a unit sits at its layer's real
input resolution. `Spec` is the concrete shape of one unit at one width pair:
equal specs are measured once (ResNet-20 has six identical stage-1 convs).
`spec_model` builds the small Keras model a spec is timed as.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Iterator, Sequence

import keras

from aps_tf.models import topology as topo

OPS = ("conv", "shortcut", "depthwise", "add", "maxpool", "head")


@dataclasses.dataclass(frozen=True)
class Unit:
  """One timed piece of the network.

  `in_slot`/`out_slot` name the slots whose widths the unit depends on (None:
  the width is fixed, e.g. the image channels, given by `in_channels`).
  `height`/`width` is the unit's input resolution.
  """
  name: str
  op: str
  in_slot: int | None
  out_slot: int | None
  height: int
  width: int
  kernel: int = 1
  stride: int = 1
  act: bool = False
  in_channels: int = 0


@dataclasses.dataclass(frozen=True)
class Spec:
  """The concrete shape of a unit at one width pair (the measurement key)."""
  op: str
  height: int
  width: int
  c_in: int
  c_out: int
  kernel: int
  stride: int
  act: str  # '' | 'relu' | 'relu6'

  @property
  def key(self) -> str:
    return (f"{self.op}_{self.height}x{self.width}_c{self.c_in}-{self.c_out}"
            f"_k{self.kernel}s{self.stride}{'_' + self.act if self.act else ''}")

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def _out(size: int, stride: int) -> int:
  return int(math.ceil(size / stride))  # 'same' padding


def units(t: topo.Topology) -> list[Unit]:
  """Every unit of `t`, in forward order."""
  h, w, channels = t.input_shape
  out: list[Unit] = []
  prev = None
  for block in t.blocks:
    if isinstance(block, topo.Stem):
      c = block.conv
      out.append(Unit(c.name, "conv", None, c.slot, h, w, c.kernel, c.stride, True,
                      in_channels=channels))
      h, w = _out(h, c.stride), _out(w, c.stride)
      if block.max_pool:
        out.append(Unit("stem_pool", "maxpool", c.slot, c.slot, h, w, 3, 2))
        h, w = _out(h, 2), _out(w, 2)
      prev = c.slot
    elif isinstance(block, topo.BasicBlock):
      c1, c2 = block.conv1, block.conv2
      out.append(Unit(c1.name, "conv", block.in_slot, c1.slot, h, w, 3, c1.stride, True))
      out.append(Unit(block.name + "_shortcut", "shortcut", block.in_slot, c2.slot, h, w, 1,
                      c1.stride))
      h, w = _out(h, c1.stride), _out(w, c1.stride)
      out.append(Unit(c2.name, "conv", c1.slot, c2.slot, h, w, 3, 1, False))
      out.append(Unit(block.name + "_add", "add", c2.slot, c2.slot, h, w, act=True))
      prev = c2.slot
    elif isinstance(block, topo.InvertedResidual):
      hidden = topo.depthwise_slot(block)
      if block.expand is not None:
        out.append(Unit(block.expand.name, "conv", block.in_slot, block.expand.slot, h, w, 1,
                        1, True))
      out.append(Unit(block.name + "_depthwise", "depthwise", hidden, hidden, h, w, 3,
                      block.depthwise_stride, True))
      h, w = _out(h, block.depthwise_stride), _out(w, block.depthwise_stride)
      out.append(Unit(block.project.name, "conv", hidden, block.project.slot, h, w, 1, 1,
                      False))
      if block.residual:
        out.append(Unit(block.name + "_add", "add", block.project.slot, block.project.slot,
                        h, w, act=False))
      prev = block.project.slot
    elif isinstance(block, topo.Head):
      if block.conv is not None:
        out.append(Unit(block.conv.name, "conv", prev, block.conv.slot, h, w, 1, 1, True))
        prev = block.conv.slot
      out.append(Unit("head", "head", prev, prev, h, w))
  return out


def _width(t: topo.Topology, unit: Unit, slot: int | None, widths: Sequence[int]) -> int:
  return unit.in_channels if slot is None else int(widths[slot])


def spec(t: topo.Topology, unit: Unit, widths: Sequence[int]) -> Spec | None:
  """The spec of `unit` in the network of per-conv `widths` (None: absent)."""
  c_in = _width(t, unit, unit.in_slot, widths)
  c_out = _width(t, unit, unit.out_slot, widths)
  if unit.op == "shortcut" and not topo.needs_projection(unit.stride, c_in, c_out):
    return None
  if unit.op == "head":
    c_out = t.num_classes
  act = ""
  if unit.act:
    act = "relu6" if t.activation == "relu6" and unit.op != "add" else "relu"
  return Spec(unit.op, unit.height, unit.width, c_in, c_out, unit.kernel, unit.stride, act)


def width_pairs(t: topo.Topology, unit: Unit) -> Iterator[tuple[int, int]]:
  """Every (input width, output width) the unit can take in the search space.

  A unit whose two widths come from one decision (tied slots, or a one-width
  unit) takes only the equal pairs.
  """
  space = t.space
  cands = lambda s: (unit.in_channels,) if s is None else space.slot_candidates(s)
  d_in = None if unit.in_slot is None else space.slot_decision(unit.in_slot)
  d_out = None if unit.out_slot is None else space.slot_decision(unit.out_slot)
  if unit.in_slot == unit.out_slot or (d_in is not None and d_in == d_out):
    for c in cands(unit.out_slot):
      yield c, c
    return
  yield from itertools.product(cands(unit.in_slot), cands(unit.out_slot))


def entry_spec(t: topo.Topology, unit: Unit, c_in: int, c_out: int) -> Spec | None:
  """`spec` for the unit at an explicit width pair."""
  widths = list(t.base_widths)
  if unit.in_slot is not None:
    widths[unit.in_slot] = c_in
  if unit.out_slot is not None:
    widths[unit.out_slot] = c_out
  return spec(t, unit, widths)


def spec_model(s: Spec) -> keras.Model:
  """The small model a spec is timed as: the unit, then a global average pool.

  The pool keeps the exporter's softmax (applied to every exported file) on a
  `c_out` vector instead of a feature map; `tail_spec` is the same pool alone,
  whose latency is subtracted (see `measure`).
  """
  max_value = 6.0 if s.act == "relu6" else None
  act = lambda x: keras.layers.ReLU(max_value=max_value)(x) if s.act else x
  if s.op == "add":
    inp = keras.Input((s.height, s.width, s.c_in), name="images")
    x = act(keras.layers.Add()([inp, inp]))
    return keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))
  inp = keras.Input((s.height, s.width, s.c_in), name="images")
  if s.op in ("conv", "shortcut"):
    x = keras.layers.Conv2D(s.c_out, s.kernel, s.stride, padding="same", use_bias=False)(inp)
    x = act(keras.layers.BatchNormalization(epsilon=1e-5)(x))
  elif s.op == "depthwise":
    x = keras.layers.DepthwiseConv2D(s.kernel, s.stride, padding="same", use_bias=False)(inp)
    x = act(keras.layers.BatchNormalization(epsilon=1e-5)(x))
  elif s.op == "maxpool":
    x = keras.layers.MaxPooling2D(s.kernel, s.stride, padding="same")(inp)
  elif s.op == "head":
    x = keras.layers.GlobalAveragePooling2D()(inp)
    return keras.Model(inp, keras.layers.Dense(s.c_out)(x))
  elif s.op == "tail":
    x = inp
  else:
    raise ValueError(f"unknown unit op {s.op!r}; expected one of {OPS}")
  return keras.Model(inp, keras.layers.GlobalAveragePooling2D()(x))


def tail_spec(s: Spec) -> Spec | None:
  """The pool-only model at the unit's output shape (None for the head, whose
  entry keeps the per-invocation overhead that every network pays once)."""
  if s.op in ("head", "tail"):
    return None
  h, w = _out(s.height, s.stride), _out(s.width, s.stride)
  return Spec("tail", h, w, s.c_out, s.c_out, 1, 1, "")
