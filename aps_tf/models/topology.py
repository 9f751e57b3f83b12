"""The block vocabulary and the model families, written once as data.

A `Topology` lists blocks whose convs name the slot (per-conv width) they
write. The supernet (`supernet.py`), the dense child (`dense.py`) and the FLOPs
counter (`aps_tf/flops.py`) are three interpreters of the same description, so
the three can never disagree on the wiring.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Sequence, Union

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
  """A network family instance: blocks over slots plus its search space."""
  model: str
  family: str            # 'resnet_cifar' | 'resnet_imagenet' | 'mobilenet_v2'
  input_shape: tuple[int, int, int]
  num_classes: int
  blocks: tuple[Block, ...]
  space: spaces.SearchSpace
  activation: str = "relu"   # 'relu' or 'relu6'

  @property
  def slot_names(self) -> tuple[str, ...]:
    return self.space.slot_names

  @property
  def base_widths(self) -> tuple[int, ...]:
    return self.space.base_widths

  @property
  def num_slots(self) -> int:
    return self.space.num_slots


CIFAR_DEFAULTS = dict(candidates=(4, 8, 16, 32, 64), meta_width=None)
RESNET18_DEFAULTS = dict(candidates=(32, 48, 64, 80), meta_width=128,
                         stage_factors=(1, 2, 4, 8))
MOBILENET_DEFAULTS = dict(candidates=(8, 12, 16, 20), meta_width=None,
                          stage_factors=(1, 1.5, 2, 4, 6, 10, 20))
# MobileNetV2 (t, c, n, s) from Sandler et al.
_MBV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                  (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def model_names() -> str:
  return "resnet<6n+2> (e.g. resnet20, resnet56), resnet18, mobilenet_v2"


def family_of(model: str) -> str:
  """Maps a model name to its family, or raises ValueError naming the choices."""
  if model == "resnet18":
    return "resnet_imagenet"
  if model == "mobilenet_v2":
    return "mobilenet_v2"
  m = re.fullmatch(r"resnet(\d+)", model or "")
  if m and int(m.group(1)) >= 8 and (int(m.group(1)) - 2) % 6 == 0:
    return "resnet_cifar"
  raise ValueError(f"unknown model {model!r}; expected one of: {model_names()}")


def build_topology(model: str, input_shape: Sequence[int] = (32, 32, 3),
                   num_classes: int = 10, candidates: Sequence[int] | None = None,
                   meta_width: int | None = None,
                   stage_factors: Sequence[float] | None = None) -> Topology:
  """Builds the topology and search space of `model`.

  Args:
    model: 'resnet<6n+2>', 'resnet18' or 'mobilenet_v2'.
    input_shape: (H, W, C) of the preprocessed input.
    num_classes: classifier width.
    candidates: base candidate widths; a decision's candidates are these times
      its stage factor (DESIGN §4). Family default when None.
    meta_width: meta width for factor 1 (scaled like the candidates); None
      means the sum of the candidates, which every sharing mode accepts.
    stage_factors: per-stage scale of candidates and meta width (ImageNet
      ResNet-18, MobileNetV2).
  """
  family = family_of(model)
  builder = {"resnet_cifar": _resnet_cifar, "resnet_imagenet": _resnet18,
             "mobilenet_v2": _mobilenet_v2}[family]
  defaults = {"resnet_cifar": CIFAR_DEFAULTS, "resnet_imagenet": RESNET18_DEFAULTS,
              "mobilenet_v2": MOBILENET_DEFAULTS}[family]
  cands = tuple(int(c) for c in (candidates or defaults["candidates"]))
  if not cands or list(cands) != sorted(set(cands)) or cands[0] < 1:
    raise ValueError(f"candidates must be positive and strictly increasing, got {cands}")
  meta = meta_width if meta_width is not None else defaults["meta_width"]
  meta = int(meta) if meta is not None else sum(cands)
  factors = tuple(stage_factors or defaults.get("stage_factors", ()))
  input_shape = tuple(int(d) for d in input_shape)
  if len(input_shape) != 3 or min(input_shape) <= 0:
    raise ValueError(f"input_shape must be (H, W, C) positive, got {input_shape}")
  return builder(model, input_shape, int(num_classes), cands, meta, factors)


class _Slots:
  """Collects slots and decisions while a family is being described."""

  def __init__(self, cands, meta):
    self.names, self.base, self.fixed, self.decisions = [], [], {}, []
    self.cands, self.meta = cands, meta

  def new(self, name: str, base: int) -> int:
    self.names.append(name)
    self.base.append(int(base))
    return len(self.names) - 1

  def decide(self, name: str, slots: Sequence[int], factor: float = 1.0):
    cands = tuple(sorted({max(1, int(round(c * factor))) for c in self.cands}))
    self.decisions.append(spaces.Decision(
        name, cands, tuple(slots), int(math.ceil(self.meta * factor))))

  def space(self) -> spaces.SearchSpace:
    return spaces.SearchSpace(tuple(self.names), tuple(self.base),
                              tuple(self.decisions), dict(self.fixed))


def _resnet_cifar(model, input_shape, num_classes, cands, meta, factors):
  """CIFAR ResNet-(6n+2): every conv output is its own decision (DESIGN §4)."""
  del factors
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


def _resnet18(model, input_shape, num_classes, cands, meta, factors):
  """ImageNet ResNet-18: 13 decisions, block outputs of a stage tied."""
  if len(factors) != 4:
    raise ValueError(f"resnet18 needs 4 stage_factors, got {factors}")
  s = _Slots(cands, meta)
  stem = Conv("stem", 7, 2, s.new("stem", 64))
  s.decide("stem", [stem.slot], factors[0])
  blocks, prev = [Stem(stem, max_pool=True)], stem.slot
  for stage, (base, f) in enumerate(zip((64, 128, 256, 512), factors), start=1):
    outs = []
    for b in range(2):
      name = f"stage{stage}_block{b + 1}"
      stride = 2 if stage > 1 and b == 0 else 1
      c1 = Conv(f"{name}_conv1", 3, stride, s.new(f"{name}_conv1", base))
      s.decide(f"{name}_hidden", [c1.slot], f)
      c2 = Conv(f"{name}_conv2", 3, 1, s.new(f"{name}_conv2", base))
      outs.append(c2.slot)
      blocks.append(BasicBlock(name, prev, c1, c2))
      prev = c2.slot
    s.decide(f"stage{stage}_out", outs, f)
  # Controller order: stem, then per stage the output decision after its hiddens.
  blocks.append(Head(prev, None, num_classes))
  return Topology(model, "resnet_imagenet", input_shape, num_classes, tuple(blocks),
                  s.space())


def _mobilenet_v2(model, input_shape, num_classes, cands, meta, factors):
  """MobileNetV2: 24 decisions (7 stage outputs, 16 hidden widths, last conv).

  The first conv (32) is fixed; the stage-output candidates are the base
  candidates times the stage factor; a block's hidden candidates are the base
  candidates scaled to its base expansion width (6 x base input width), and the
  last conv's to 1280: all candidate sets are {0.5, 0.75, 1, 1.25} x base with
  the defaults (our choice: DESIGN §4 fixes only the stage outputs).
  """
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


def depthwise_slot(block: InvertedResidual) -> int:
  """The slot whose width the depthwise conv of `block` runs at."""
  return block.expand.slot if block.expand is not None else block.in_slot


def needs_projection(stride: int, in_width: int, out_width: int) -> bool:
  """ResNet shortcut rule shared by the dense child and the FLOPs counter."""
  return stride != 1 or in_width != out_width


def check_residual_widths(block: InvertedResidual, widths: Sequence[int]) -> None:
  if block.residual and widths[block.in_slot] != widths[block.project.slot]:
    raise ValueError(
        f"{block.name}: residual block needs equal input and output widths, got "
        f"{widths[block.in_slot]} and {widths[block.project.slot]} (the widths of a "
        "MobileNetV2 stage are tied)")
