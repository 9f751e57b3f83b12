"""Decision layouts: which per-conv widths each search decision sets.

A network's searchable widths are "slots", one per entry of the per-conv width
list of the architecture file (shortcut and depthwise convs are implied by
their neighbours and own no slot). A decision picks one candidate width and
writes it to one or more slots (several when widths are residual-coupled).
Slots that no decision sets are fixed.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Decision:
  """One controller decision: a candidate index for a group of slots.

  Usually every slot takes the same width (`candidates[index]`). `per_slot`,
  when given, lists one `(candidates, meta_width)` per slot, aligned with
  `slots`: one index then sets slots of different widths together (e.g. the
  reference MobileNetV2's first conv {16,24,32,40} and its first block's output
  {8,12,16,20}). `candidates`/`meta_width` are those of the first slot.
  """
  name: str
  candidates: tuple[int, ...]
  slots: tuple[int, ...]
  meta_width: int
  per_slot: tuple[tuple[tuple[int, ...], int], ...] = ()

  def __post_init__(self):
    if self.per_slot:
      if len(self.per_slot) != len(self.slots):
        raise ValueError(f"decision {self.name}: {len(self.per_slot)} per-slot widths for "
                         f"{len(self.slots)} slots")
      if any(len(c) != len(self.candidates) for c, _ in self.per_slot):
        raise ValueError(f"decision {self.name}: every slot needs "
                         f"{len(self.candidates)} candidates")

  def slot_options(self, k: int) -> tuple[tuple[int, ...], int]:
    """(candidates, meta width) of this decision's `k`-th slot."""
    return self.per_slot[k] if self.per_slot else (self.candidates, self.meta_width)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """Decisions over the slots of one network.

  Attributes:
    slot_names: name of every per-conv width, in architecture-file order.
    base_widths: the unsearched base model's width for every slot.
    decisions: the searched decisions, in controller order.
    fixed: width of each slot that no decision sets.
  """
  slot_names: tuple[str, ...]
  base_widths: tuple[int, ...]
  decisions: tuple[Decision, ...]
  fixed: dict[int, int]

  def __post_init__(self):
    owner, position = {}, {}
    for d_index, dec in enumerate(self.decisions):
      for k, s in enumerate(dec.slots):
        if s in owner or s in self.fixed:
          raise ValueError(f"slot {self.slot_names[s]} is set twice")
        owner[s], position[s] = d_index, k
    missing = set(range(self.num_slots)) - set(owner) - set(self.fixed)
    if missing:
      raise ValueError(f"slots set by nothing: {sorted(missing)}")
    object.__setattr__(self, "_owner", owner)
    object.__setattr__(self, "_position", position)

  @property
  def num_slots(self) -> int:
    return len(self.slot_names)

  @property
  def num_decisions(self) -> int:
    return len(self.decisions)

  @property
  def num_candidates(self) -> tuple[int, ...]:
    return tuple(len(d.candidates) for d in self.decisions)

  def slot_decision(self, slot: int) -> int | None:
    """Index of the decision setting `slot`, or None for a fixed slot."""
    return self._owner.get(slot)  # pytype: disable=attribute-error

  def _slot_options(self, slot: int) -> tuple[tuple[int, ...], int]:
    d = self.slot_decision(slot)
    if d is None:
      return (self.fixed[slot],), self.fixed[slot]
    return self.decisions[d].slot_options(self._position[slot])  # pytype: disable=attribute-error

  def slot_candidates(self, slot: int) -> tuple[int, ...]:
    return self._slot_options(slot)[0]

  def slot_meta_width(self, slot: int) -> int:
    return self._slot_options(slot)[1]

  def slot_to_decision_index(self) -> np.ndarray:
    """`[num_slots]` int32 index into `concat(arch, [0])`: fixed slots read the 0."""
    return np.array([self._owner.get(s, self.num_decisions)  # pytype: disable=attribute-error
                     for s in range(self.num_slots)], np.int32)

  def widths(self, arch: Sequence[int]) -> list[int]:
    """Expands decision indices to the per-conv width list."""
    arch = [int(a) for a in arch]
    if len(arch) != self.num_decisions:
      raise ValueError(f"expected {self.num_decisions} decisions, got {len(arch)}")
    out = [0] * self.num_slots
    for s, w in self.fixed.items():
      out[s] = w
    for d, (dec, a) in enumerate(zip(self.decisions, arch)):
      if not 0 <= a < len(dec.candidates):
        raise ValueError(f"decision {d} ({dec.name}): index {a} out of range "
                         f"[0, {len(dec.candidates)})")
      for k, s in enumerate(dec.slots):
        out[s] = dec.slot_options(k)[0][a]
    return out

  def decisions_for_widths(self, widths: Sequence[int]) -> list[int] | None:
    """The decision indices that give `widths`, or None if no arch gives them."""
    if len(widths) != self.num_slots:
      return None
    if any(widths[s] != w for s, w in self.fixed.items()):
      return None
    arch = []
    for dec in self.decisions:
      indices = set()
      for k, s in enumerate(dec.slots):
        cands = dec.slot_options(k)[0]
        if int(widths[s]) not in cands:
          return None
        indices.add(cands.index(int(widths[s])))
      if len(indices) != 1:
        return None
      arch.append(indices.pop())
    return arch

  def largest(self) -> list[int]:
    return [len(d.candidates) - 1 for d in self.decisions]

  def smallest(self) -> list[int]:
    return [0] * self.num_decisions

  def sample_uniform(self, rng: np.random.Generator) -> list[int]:
    return [int(rng.integers(len(d.candidates))) for d in self.decisions]
