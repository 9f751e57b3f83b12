"""The block vocabulary and the model families, written once as data.

A `Topology` lists blocks whose convs name the slot (per-conv width) they
write. The supernet (`supernet.py`), the dense child (`dense.py`) and the FLOPs
counter (`aps_tf/flops.py`) are three interpreters of the same description, so
the three can never disagree on the wiring.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence, Union

from aps_tf import schema
from aps_tf import spaces


@dataclasses.dataclass(frozen=True)
class Conv:
  """A conv writing `slot`; bias-free, followed by BatchNorm."""
  name: str
  kernel: int
  stride: int
  slot: int


@dataclasses.dataclass(frozen=True)
class Stem:
  """conv-BN-ReLU, optionally followed by a 3x3/2 max pool (ImageNet ResNet)."""
  conv: Conv
  max_pool: bool = False


@dataclasses.dataclass(frozen=True)
class BasicBlock:
  """ResNet basic block. Shortcut: identity when widths match and stride is 1,
  else 1x1 conv + BN (written to the block's output slot)."""
  name: str
  in_slot: int
  conv1: Conv
  conv2: Conv


@dataclasses.dataclass(frozen=True)
class InvertedResidual:
  """MobileNetV2 block: [1x1 expand] -> 3x3 depthwise -> 1x1 project.

  The depthwise conv runs at the expansion width (or the input width when
  there is no expansion). As in the original, only the non-first blocks of a
  stage are residual; their input and output widths are tied."""
  name: str
  in_slot: int
  expand: Conv | None
  depthwise_stride: int
  project: Conv
  residual: bool


@dataclasses.dataclass(frozen=True)
class Head:
  """[1x1 conv-BN-act] -> global average pool -> dense logits."""
  in_slot: int
  conv: Conv | None
  num_classes: int


Block = Union[Stem, BasicBlock, InvertedResidual, Head]


@dataclasses.dataclass(frozen=True)
class Topology:
  """A network family instance: blocks over slots plus its search space.

  Family 'graph' (an imported Keras model, `aps_tf.models.from_keras`) has no
  blocks: its `graph` field (`aps_tf.models.graph.Graph`) is the network and
  `graph_options` the candidate rule (`width_fractions`, `meta_width`).
  """
  model: str
  family: str            # 'resnet_cifar' | 'resnet_imagenet' | 'mobilenet_v2' | 'graph'
  input_shape: tuple[int, int, int]
  num_classes: int
  blocks: tuple[Block, ...]
  space: spaces.SearchSpace
  activation: str = "relu"   # 'relu' or 'relu6'
  space_kind: str = "aps_tf"  # see SPACES
  fix_last_width: bool = False
  downsample_shortcut: str = "conv_bn"  # see DOWNSAMPLE_SHORTCUTS
  graph: Any = dataclasses.field(default=None, compare=False, repr=False)
  graph_options: Any = dataclasses.field(default=None, compare=False, repr=False)

  @property
  def slot_names(self) -> tuple[str, ...]:
    """The name of every slot (its first conv's layer name)."""
    return self.space.slot_names

  @property
  def base_widths(self) -> tuple[int, ...]:
    """The widest candidate of every slot."""
    return self.space.base_widths

  @property
  def num_slots(self) -> int:
    """How many width slots the topology has."""
    return self.space.num_slots


# Search-space layouts. 'aps_tf': this project's (MobileNetV2: standard
# expansion 6, first conv fixed at 32). 'reference': the authors' release
# (ResNet-18: decision order stem, then per stage first mid width, stage output,
# other mid widths; MobileNetV2: expansions [1,3,3,3,6,6,6], first conv searched
# with the first block's output, meta width 32 x stage factor). With
# 'reference' the ResNets also fix the last block's output at the widest
# candidate unless `fix_last_width` says otherwise.
SPACES = schema.SPACES
DOWNSAMPLE_SHORTCUTS = schema.DOWNSAMPLE_SHORTCUTS

CIFAR_DEFAULTS = dict(candidates=(4, 8, 16, 32, 64), meta_width=None)
RESNET18_DEFAULTS = dict(candidates=(32, 48, 64, 80), meta_width=128,
                         stage_factors=(1, 2, 4, 8))
MOBILENET_DEFAULTS = dict(candidates=(8, 12, 16, 20), meta_width=None,
                          stage_factors=(1, 1.5, 2, 4, 6, 10, 20))
MOBILENET_REFERENCE_DEFAULTS = dict(MOBILENET_DEFAULTS, meta_width=32)
# The reference space's expansion ratio per stage, and the scale of the first
# conv (x2) and last conv (x4) candidates and meta width relative to the first
# and last stage's.
_MBV2_REFERENCE_EXPANSIONS = (1, 3, 3, 3, 6, 6, 6)
_MBV2_REFERENCE_FIRST, _MBV2_REFERENCE_LAST = 2, 4
# MobileNetV2 (t, c, n, s) from Sandler et al.
_MBV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                  (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


model_names = schema.model_names
family_of = schema.family_of


def build_topology(model: str, input_shape: Sequence[int] = (32, 32, 3),
                   num_classes: int = 10, candidates: Sequence[int] | None = None,
                   meta_width: int | None = None,
                   stage_factors: Sequence[float] | None = None,
                   space: str = "aps_tf", fix_last_width: bool | None = None,
                   downsample_shortcut: str = "conv_bn") -> Topology:
  """Builds the topology and search space of `model`.

  Args:
    model: 'resnet<6n+2>', 'resnet18' or 'mobilenet_v2'.
    input_shape: (H, W, C) of the preprocessed input.
    num_classes: classifier width.
    candidates: base candidate widths; a decision's candidates are these times
      its stage factor. Family default when None.
    meta_width: meta width for factor 1 (scaled like the candidates); None
      means the family default (the sum of the candidates, which every sharing
      mode accepts; 32 for the reference MobileNetV2 space).
    stage_factors: per-stage scale of candidates and meta width (ImageNet
      ResNet-18, MobileNetV2).
    space: decision layout, one of SPACES.
    fix_last_width: ResNets only: the last block's output (and so the
      classifier input) is fixed at the widest candidate and no decision sets
      it. None: True for the 'reference' space, else False.
    downsample_shortcut: shortcut of strided ResNet blocks, one of
      DOWNSAMPLE_SHORTCUTS.
  """
  family = family_of(model)
  if space not in SPACES:
    raise ValueError(f"unknown search space {space!r}; expected one of {SPACES}")
  if downsample_shortcut not in DOWNSAMPLE_SHORTCUTS:
    raise ValueError(f"unknown downsample_shortcut {downsample_shortcut!r}; expected one "
                     f"of {DOWNSAMPLE_SHORTCUTS}")
  if fix_last_width is None:
    fix_last_width = space == "reference" and family != "mobilenet_v2"
  if fix_last_width and family == "mobilenet_v2":
    raise ValueError("fix_last_width applies to ResNets only (MobileNetV2's last 1x1 "
                     "conv is a decision)")
  reference = space == "reference"
  builder = {"resnet_cifar": _resnet_cifar, "resnet_imagenet": _resnet18,
             "mobilenet_v2": _mobilenet_v2_reference if reference else _mobilenet_v2}[family]
  defaults = {"resnet_cifar": CIFAR_DEFAULTS, "resnet_imagenet": RESNET18_DEFAULTS,
              "mobilenet_v2": MOBILENET_REFERENCE_DEFAULTS if reference
              else MOBILENET_DEFAULTS}[family]
  cands = tuple(int(c) for c in (candidates or defaults["candidates"]))
  if not cands or list(cands) != sorted(set(cands)) or cands[0] < 1:
    raise ValueError(f"candidates must be positive and strictly increasing, got {cands}")
  meta = meta_width if meta_width is not None else defaults["meta_width"]
  meta = int(meta) if meta is not None else sum(cands)
  factors = tuple(stage_factors or defaults.get("stage_factors", ()))
  input_shape = tuple(int(d) for d in input_shape)
  if len(input_shape) != 3 or min(input_shape) <= 0:
    raise ValueError(f"input_shape must be (H, W, C) positive, got {input_shape}")
  t = builder(model, input_shape, int(num_classes), cands, meta, factors, space)
  if fix_last_width:
    t = _fix_last_width(t)
  return dataclasses.replace(t, space_kind=space, fix_last_width=bool(fix_last_width),
                             downsample_shortcut=downsample_shortcut)


class _Slots:
  """Collects slots and decisions while a family is being described."""

  def __init__(self, cands, meta):
    self.names, self.base, self.fixed, self.decisions = [], [], {}, []
    self.cands, self.meta = cands, meta

  def new(self, name: str, base: int) -> int:
    self.names.append(name)
    self.base.append(int(base))
    return len(self.names) - 1

  def scaled(self, factor: float = 1.0) -> tuple[tuple[int, ...], int]:
    """(candidates, meta width) scaled by `factor`."""
    cands = tuple(sorted({max(1, int(round(c * factor))) for c in self.cands}))
    return cands, int(math.ceil(self.meta * factor))

  def decide(self, name: str, slots: Sequence[int], factor: float = 1.0):
    cands, meta = self.scaled(factor)
    self.decisions.append(spaces.Decision(name, cands, tuple(slots), meta))

  def space(self) -> spaces.SearchSpace:
    return spaces.SearchSpace(tuple(self.names), tuple(self.base),
                              tuple(self.decisions), dict(self.fixed))


def _resnet_cifar(model, input_shape, num_classes, cands, meta, factors, space):
  """CIFAR ResNet-(6n+2): every conv output is its own decision (both spaces)."""
  del factors, space
  n = (int(model[len("resnet"):]) - 2) // 6
  s = _Slots(cands, meta)
  stem = Conv("stem", 3, 1, s.new("stem", 16))
  blocks, prev = [Stem(stem)], stem.slot
  for stage, base in enumerate((16, 32, 64), start=1):
    for b in range(n):
      name = f"stage{stage}_block{b + 1}"
      stride = 2 if stage > 1 and b == 0 else 1
      c1 = Conv(f"{name}_conv1", 3, stride, s.new(f"{name}_conv1", base))
      c2 = Conv(f"{name}_conv2", 3, 1, s.new(f"{name}_conv2", base))
      blocks.append(BasicBlock(name, prev, c1, c2))
      prev = c2.slot
  for slot, name in enumerate(s.names):
    s.decide(name, [slot])
  blocks.append(Head(prev, None, num_classes))
  return Topology(model, "resnet_cifar", input_shape, num_classes, tuple(blocks), s.space())


def _resnet18(model, input_shape, num_classes, cands, meta, factors, space):
  """ImageNet ResNet-18: 13 decisions, block outputs of a stage tied.

  Controller order: stem, then per stage the hidden (conv1) widths and the
  stage output: 'aps_tf' puts the output after both hiddens, 'reference' after
  the first block's hidden (the authors' order).
  """
  if len(factors) != 4:
    raise ValueError(f"resnet18 needs 4 stage_factors, got {factors}")
  s = _Slots(cands, meta)
  stem = Conv("stem", 7, 2, s.new("stem", 64))
  s.decide("stem", [stem.slot], factors[0])
  blocks, prev = [Stem(stem, max_pool=True)], stem.slot
  for stage, (base, f) in enumerate(zip((64, 128, 256, 512), factors), start=1):
    stage_blocks = []
    for b in range(2):
      name = f"stage{stage}_block{b + 1}"
      stride = 2 if stage > 1 and b == 0 else 1
      c1 = Conv(f"{name}_conv1", 3, stride, s.new(f"{name}_conv1", base))
      c2 = Conv(f"{name}_conv2", 3, 1, s.new(f"{name}_conv2", base))
      stage_blocks.append(BasicBlock(name, prev, c1, c2))
      prev = c2.slot
    hidden = [(f"{b.name}_hidden", [b.conv1.slot]) for b in stage_blocks]
    out = (f"stage{stage}_out", [b.conv2.slot for b in stage_blocks])
    order = ([hidden[0], out] + hidden[1:]) if space == "reference" else hidden + [out]
    for name, slots in order:
      s.decide(name, slots, f)
    blocks.extend(stage_blocks)
  blocks.append(Head(prev, None, num_classes))
  return Topology(model, "resnet_imagenet", input_shape, num_classes, tuple(blocks),
                  s.space())


def _mobilenet_v2(model, input_shape, num_classes, cands, meta, factors, space):
  """MobileNetV2, 'aps_tf' space: 24 decisions (7 stage outputs, 16 hidden widths, last conv).

  The first conv (32) is fixed; the stage-output candidates are the base
  candidates times the stage factor; a block's hidden candidates are the base
  candidates scaled to its base expansion width (6 x base input width), and the
  last conv's to 1280: all candidate sets are {0.5, 0.75, 1, 1.25} x base with
  the defaults (our choice: the paper fixes only the stage outputs).
  """
  del space
  if len(factors) != len(_MBV2_SETTINGS):
    raise ValueError(f"mobilenet_v2 needs {len(_MBV2_SETTINGS)} stage_factors, got {factors}")
  ref = cands[len(cands) // 2]  # the candidate that equals the base width (16)
  s = _Slots(cands, meta)
  first = Conv("conv_first", 3, 2, s.new("conv_first", 32))
  s.fixed[first.slot] = 32
  blocks, prev, prev_base, k = [Stem(first)], first.slot, 32, 0
  for stage, ((t, c, n, stride), f) in enumerate(zip(_MBV2_SETTINGS, factors), start=1):
    outs = []
    for b in range(n):
      k += 1
      name = f"block{k}"
      expand = None
      if t != 1:
        hidden = prev_base * t
        expand = Conv(f"{name}_expand", 1, 1, s.new(f"{name}_expand", hidden))
        s.decide(f"{name}_hidden", [expand.slot], hidden / ref)
      project = Conv(f"{name}_project", 1, 1, s.new(f"{name}_project", c))
      outs.append(project.slot)
      blocks.append(InvertedResidual(name, prev, expand, stride if b == 0 else 1,
                                     project, residual=b > 0))
      prev, prev_base = project.slot, c
    s.decide(f"stage{stage}_out", outs, f)
  last = Conv("conv_last", 1, 1, s.new("conv_last", 1280))
  s.decide("conv_last", [last.slot], 1280 / ref)
  blocks.append(Head(prev, last, num_classes))
  return Topology(model, "mobilenet_v2", input_shape, num_classes, tuple(blocks),
                  s.space(), activation="relu6")


def _mobilenet_v2_reference(model, input_shape, num_classes, cands, meta, factors, space):
  """MobileNetV2, the authors' 'reference' space: 24 decisions.

  Decision 0 sets, by one index, the first conv (candidates and meta x2) and
  the first (t=1) block's output. Per later stage: one output decision shared
  by the stage's blocks (candidates and meta x the stage factor), then one
  hidden-width decision per block whose candidates are round(t x the block's
  input candidates) and meta t x the input meta; expansions [1,3,3,3,6,6,6].
  Last: the 1x1 conv (x4 the last stage's). A block is residual only when its
  stride is 1 and its input and output meta widths match. Base widths (the
  unsearched model) are the standard MobileNetV2-1.0's, so base FLOPs are
  unchanged.
  """
  del space
  if len(factors) != len(_MBV2_SETTINGS):
    raise ValueError(f"mobilenet_v2 needs {len(_MBV2_SETTINGS)} stage_factors, got {factors}")
  s = _Slots(cands, meta)
  first = Conv("conv_first", 3, 2, s.new("conv_first", 32))
  blocks = [Stem(first)]
  prev, prev_base = first.slot, 32
  first_opts = prev_opts = s.scaled(factors[0] * _MBV2_REFERENCE_FIRST)
  for stage, ((_, c, n, stride), t, f) in enumerate(
      zip(_MBV2_SETTINGS, _MBV2_REFERENCE_EXPANSIONS, factors), start=1):
    out_opts = s.scaled(f)
    outs, hidden_decisions = [], []
    for b in range(n):
      name = f"block{len(blocks)}"
      expand = None
      if t != 1:
        expand = Conv(f"{name}_expand", 1, 1, s.new(f"{name}_expand", prev_base * 6))
        hidden = (tuple(int(round(t * w)) for w in prev_opts[0]), t * prev_opts[1])
        hidden_decisions.append(spaces.Decision(f"{name}_hidden", hidden[0],
                                                (expand.slot,), hidden[1]))
      project = Conv(f"{name}_project", 1, 1, s.new(f"{name}_project", c))
      outs.append(project.slot)
      block_stride = stride if b == 0 else 1
      blocks.append(InvertedResidual(name, prev, expand, block_stride, project,
                                     residual=block_stride == 1 and prev_opts[1] == out_opts[1]))
      prev, prev_base, prev_opts = project.slot, c, out_opts
    if stage == 1:  # expansion 1: no hidden decision
      s.decisions.append(spaces.Decision(
          "conv_first", first_opts[0], (first.slot, *outs), first_opts[1],
          per_slot=(first_opts,) + (out_opts,) * len(outs)))
    else:
      s.decisions.append(spaces.Decision(f"stage{stage}_out", out_opts[0], tuple(outs),
                                         out_opts[1]))
      s.decisions.extend(hidden_decisions)
  last = Conv("conv_last", 1, 1, s.new("conv_last", 1280))
  s.decide("conv_last", [last.slot], factors[-1] * _MBV2_REFERENCE_LAST)
  blocks.append(Head(prev, last, num_classes))
  return Topology(model, "mobilenet_v2", input_shape, num_classes, tuple(blocks),
                  s.space(), activation="relu6")


def _fix_last_width(t: Topology) -> Topology:
  """Fixes the last ResNet block's output at its decision's widest candidate."""
  last = [b for b in t.blocks if isinstance(b, BasicBlock)][-1]
  slot, sp = last.conv2.slot, t.space
  d = sp.slot_decision(slot)
  if d is None:
    return t
  dec = sp.decisions[d]
  fixed = dict(sp.fixed)
  fixed[slot] = max(sp.slot_candidates(slot))
  decisions = list(sp.decisions)
  rest = tuple(s for s in dec.slots if s != slot)
  if rest:
    per_slot = tuple(o for s, o in zip(dec.slots, dec.per_slot) if s != slot) if dec.per_slot else ()
    decisions[d] = dataclasses.replace(dec, slots=rest, per_slot=per_slot)
  else:
    del decisions[d]
  space = spaces.SearchSpace(sp.slot_names, sp.base_widths, tuple(decisions), fixed)
  return dataclasses.replace(t, space=space)


def depthwise_slot(block: InvertedResidual) -> int:
  """The slot whose width the depthwise conv of `block` runs at.

  Args:
    block: an inverted residual block.

  Returns:
    The slot index.
  """
  return block.expand.slot if block.expand is not None else block.in_slot


def needs_projection(stride: int, in_width: int, out_width: int) -> bool:
  """ResNet shortcut rule shared by the dense child and the FLOPs counter.

  Args:
    stride: the block's stride.
    in_width: its input width.
    out_width: its output width.

  Returns:
    Whether the shortcut needs a 1x1 conv.
  """
  return stride != 1 or in_width != out_width


def shortcut_kind(t: Topology, block: BasicBlock, widths: Sequence[int]) -> str | None:
  """A ResNet block's shortcut at `widths`.

  The one rule the supernet, the dense child and the FLOPs counter share.

  Args:
    t: the topology.
    block: one of its basic blocks.
    widths: per-slot widths.

  Returns:
    None (identity), 'conv_bn' or 'avgpool_conv'.
  """
  stride = block.conv1.stride
  if stride != 1 and t.downsample_shortcut == "avgpool_conv":
    return "avgpool_conv"
  if needs_projection(stride, widths[block.in_slot], widths[block.conv2.slot]):
    return "conv_bn"
  return None


def check_residual_widths(block: InvertedResidual, widths: Sequence[int]) -> None:
  """Fails unless an inverted residual block's residual adds equal widths.

  Args:
    block: the block.
    widths: per-slot widths.

  Raises:
    ValueError: the block has a residual and its input and output widths differ.
  """
  if block.residual and widths[block.in_slot] != widths[block.project.slot]:
    raise ValueError(
        f"{block.name}: residual block needs equal input and output widths, got "
        f"{widths[block.in_slot]} and {widths[block.project.slot]} (the widths of a "
        "MobileNetV2 stage are tied)")
