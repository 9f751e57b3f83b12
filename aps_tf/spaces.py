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
  """One controller decision: a candidate width for a group of slots."""
  name: str
  candidates: tuple[int, ...]
  slots: tuple[int, ...]
  meta_width: int


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
    owner = {}
    for d_index, dec in enumerate(self.decisions):
      for s in dec.slots:
        if s in owner or s in self.fixed:
          raise ValueError(f"slot {self.slot_names[s]} is set twice")
        owner[s] = d_index
    missing = set(range(self.num_slots)) - set(owner) - set(self.fixed)
    if missing:
      raise ValueError(f"slots set by nothing: {sorted(missing)}")
    object.__setattr__(self, "_owner", owner)

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

  def slot_candidates(self, slot: int) -> tuple[int, ...]:
    d = self.slot_decision(slot)
    return self.decisions[d].candidates if d is not None else (self.fixed[slot],)

  def slot_meta_width(self, slot: int) -> int:
    d = self.slot_decision(slot)
    return self.decisions[d].meta_width if d is not None else self.fixed[slot]

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
      for s in dec.slots:
        out[s] = dec.candidates[a]
    return out

  def decisions_for_widths(self, widths: Sequence[int]) -> list[int] | None:
    """The decision indices that give `widths`, or None if no arch gives them."""
    if len(widths) != self.num_slots:
      return None
    if any(widths[s] != w for s, w in self.fixed.items()):
      return None
    arch = []
    for dec in self.decisions:
      vals = {int(widths[s]) for s in dec.slots}
      if len(vals) != 1 or next(iter(vals)) not in dec.candidates:
        return None
      arch.append(dec.candidates.index(next(iter(vals))))
    return arch

  def largest(self) -> list[int]:
    return [len(d.candidates) - 1 for d in self.decisions]

  def smallest(self) -> list[int]:
    return [0] * self.num_decisions

  def sample_uniform(self, rng: np.random.Generator) -> list[int]:
    return [int(rng.integers(len(d.candidates))) for d in self.decisions]

  def describe(self) -> list[dict]:
    return [{"name": d.name, "candidates": list(d.candidates),
             "slots": [self.slot_names[s] for s in d.slots],
             "meta_width": d.meta_width} for d in self.decisions]
