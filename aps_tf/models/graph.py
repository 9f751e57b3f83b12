"""The layer graph: a network as layer-level ops whose channel counts are slots.

A `Graph` lists nodes in topological order. Each node is one layer (or one
Keras functional operation such as `x + 3.0`) of a user's model, with its Keras
config, its producers and the *parts* of its output channels: the slots
(channel-count variables) whose widths, concatenated, give the node's channel
count. A conv or dense writes a new slot; elementwise ops, pooling, BN and
depthwise convs keep their input's parts; a concatenation's parts are its
inputs' parts in order. Ties between slots (an `Add` or a `Multiply` of two
tensors makes their channel counts equal) are solved by union-find into
groups; a group holding a fixed slot (an input, the model's output, a pinned
layer, a layer with per-channel constants) is fixed, every other group is one
search decision.

The supernet (`graph_supernet.py`), the dense child (`graph_dense.py`) and the
FLOPs counter (`aps_tf.flops`) interpret this one description. The graph is
plain data and round-trips through JSON (`to_json` / `from_json`), so an
architecture file carries it and the child is built from the file alone.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from aps_tf import spaces
from aps_tf.models import topology as topo

FORMAT = "aps-tf-graph"
VERSION = 1

# Op kinds. Width-changing: conv, dense (a new slot). Keeping the input's parts:
# the rest, except concat (the inputs' parts, concatenated) and the tying merges.
OPS = ("input", "conv", "depthwise", "dense", "bn", "act", "add", "multiply", "merge",
       "concat", "pool", "global_pool", "pad", "dropout", "flatten", "reshape", "rescale",
       "normalize", "scalar")
WEIGHTED = ("conv", "depthwise", "dense")
DEFAULT_WIDTH_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


@dataclasses.dataclass(frozen=True)
class Node:
  """One op of the graph.

  Attributes:
    name: the Keras layer's name (the dense child keeps it), or the functional
      operation's name.
    op: one of OPS.
    inputs: names of the producing nodes, in call order.
    layer: `keras.saving.serialize_keras_object` of the layer, without its build
      config (None for functional operations and inputs).
    parts: slots whose widths, concatenated, are the output's channels.
    shape: the output shape without the batch axis, in the user's model.
    spatial: for a rank-2 output, the product of the flattened spatial dims
      (1 unless it came from `Flatten` of a map larger than 1x1): the channel
      axis repeats once per spatial position.
    fn: functional operations only: the `keras.ops` function name ('add', ...).
    scalar: functional operations with a constant operand: the constant.
    scalar_first: whether the constant is the first operand.
  """
  name: str
  op: str
  inputs: tuple[str, ...]
  layer: dict | None
  parts: tuple[int, ...]
  shape: tuple[int, ...]
  spatial: int = 1
  fn: str | None = None
  scalar: float | None = None
  scalar_first: bool = False

  @property
  def config(self) -> dict:
    return (self.layer or {}).get("config", {})

  def to_json(self) -> dict:
    out = dataclasses.asdict(self)
    out["inputs"], out["parts"], out["shape"] = (list(self.inputs), list(self.parts),
                                                 list(self.shape))
    return out

  @classmethod
  def from_json(cls, obj: dict) -> "Node":
    obj = dict(obj)
    obj["inputs"], obj["parts"] = tuple(obj["inputs"]), tuple(obj["parts"])
    obj["shape"] = tuple(obj["shape"])
    return cls(**obj)


@dataclasses.dataclass(frozen=True)
class Graph:
  """A network as nodes over slots.

  Attributes:
    name: the model's name.
    nodes: in topological order.
    inputs: names of the input nodes.
    output: name of the output node.
    slot_names: the producing node's name for every slot.
    slot_widths: every slot's width in the user's model.
    groups: union-find root (a slot index) of every slot: equal roots, tied widths.
    fixed: slots whose width is not searched (the whole group of each is fixed).
    softmax: name of the node whose softmax ends the model (stripped to give
      logits), or None when the model outputs logits.
  """
  name: str
  nodes: tuple[Node, ...]
  inputs: tuple[str, ...]
  output: str
  slot_names: tuple[str, ...]
  slot_widths: tuple[int, ...]
  groups: tuple[int, ...]
  fixed: frozenset
  softmax: str | None = None

  def node(self, name: str) -> Node:
    return self._by_name()[name]

  def _by_name(self) -> dict:
    cache = self.__dict__.get("_index")
    if cache is None:
      cache = {n.name: n for n in self.nodes}
      object.__setattr__(self, "_index", cache)
    return cache

  @property
  def num_slots(self) -> int:
    return len(self.slot_names)

  def width(self, node: Node | str, widths: Sequence[int]) -> int:
    """Channel count of a node's output at per-slot `widths`."""
    node = self.node(node) if isinstance(node, str) else node
    return int(sum(int(widths[s]) for s in node.parts))

  def searchable_groups(self) -> list[list[int]]:
    """Slots of every searchable group, groups ordered by their first slot."""
    fixed_roots = {self.groups[s] for s in self.fixed}
    out: dict[int, list[int]] = {}
    for s, root in enumerate(self.groups):
      if root not in fixed_roots:
        out.setdefault(root, []).append(s)
    return list(out.values())

  def fixed_slots(self) -> list[int]:
    fixed_roots = {self.groups[s] for s in self.fixed}
    return [s for s, r in enumerate(self.groups) if r in fixed_roots]

  def to_json(self) -> dict:
    return {"format": FORMAT, "version": VERSION, "name": self.name,
            "inputs": list(self.inputs), "output": self.output,
            "slot_names": list(self.slot_names), "slot_widths": list(self.slot_widths),
            "groups": list(self.groups), "fixed": sorted(self.fixed),
            "softmax": self.softmax, "nodes": [n.to_json() for n in self.nodes]}

  @classmethod
  def from_json(cls, obj: dict) -> "Graph":
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
      raise ValueError(f"not an aps-tf layer graph (format {obj.get('format')!r}, "
                       f"expected {FORMAT!r})" if isinstance(obj, dict) else
                       f"expected a layer graph object, got {type(obj).__name__}")
    if obj.get("version") != VERSION:
      raise ValueError(f"layer graph version {obj.get('version')!r}; this aps-tf reads "
                       f"{VERSION}")
    return cls(name=obj["name"], nodes=tuple(Node.from_json(n) for n in obj["nodes"]),
               inputs=tuple(obj["inputs"]), output=obj["output"],
               slot_names=tuple(obj["slot_names"]),
               slot_widths=tuple(int(w) for w in obj["slot_widths"]),
               groups=tuple(int(g) for g in obj["groups"]), fixed=frozenset(obj["fixed"]),
               softmax=obj.get("softmax"))


class UnionFind:
  """Ties between slots; the smallest slot of a group is its root."""

  def __init__(self, n: int = 0):
    self.parent = list(range(n))

  def add(self) -> int:
    self.parent.append(len(self.parent))
    return len(self.parent) - 1

  def find(self, a: int) -> int:
    while self.parent[a] != a:
      self.parent[a] = self.parent[self.parent[a]]
      a = self.parent[a]
    return a

  def union(self, a: int, b: int) -> None:
    ra, rb = self.find(a), self.find(b)
    if ra != rb:
      self.parent[max(ra, rb)] = min(ra, rb)

  def roots(self) -> tuple[int, ...]:
    return tuple(self.find(a) for a in range(len(self.parent)))


def candidate_widths(width: int, fractions: Sequence[float]) -> tuple[int, ...]:
  """Fractions of `width`, rounded, at least 1, deduplicated and sorted."""
  return tuple(sorted({max(1, int(round(float(f) * width))) for f in fractions}))


def _meta(width: int, cands: Sequence[int], meta_width) -> int:
  """Meta width of a slot: its original width (None), a multiple of it (a
  number), or the sum of its candidates ('sum', what independent sharing needs)."""
  if meta_width is None:
    return max(width, max(cands))
  if meta_width == "sum":
    return int(sum(cands))
  return max(int(math.ceil(float(meta_width) * width)), max(cands))


def topology(g: Graph, width_fractions: Sequence[float] = DEFAULT_WIDTH_FRACTIONS,
             meta_width: Any = None) -> topo.Topology:
  """The `Topology` (family 'graph') of a layer graph: one decision per searchable group.

  Args:
    g: the graph.
    width_fractions: candidate widths as fractions of each group's original width.
    meta_width: None (the original width: ordinal and transitional sharing), a
      number (that multiple of the original width) or 'sum' (the sum of the
      candidates, which independent sharing needs).

  Returns:
    The topology; its `graph` field is `g`.

  Raises:
    ValueError: bad fractions or meta width.
  """
  fractions = tuple(float(f) for f in width_fractions)
  if not fractions or any(not 0 < f <= 1 for f in fractions):
    raise ValueError(f"width_fractions must be in (0, 1], got {list(width_fractions)}")
  if meta_width is not None and meta_width != "sum" and (
      isinstance(meta_width, bool) or not isinstance(meta_width, (int, float))
      or meta_width < 1):
    raise ValueError(f"meta_width must be None, 'sum' or a number >= 1, got {meta_width!r}")
  decisions = []
  for slots in g.searchable_groups():
    width = g.slot_widths[slots[0]]
    cands = candidate_widths(width, fractions)
    decisions.append(spaces.Decision(g.slot_names[slots[0]], cands, tuple(slots),
                                     _meta(width, cands, meta_width)))
  fixed = {s: g.slot_widths[s] for s in g.fixed_slots()}
  space = spaces.SearchSpace(g.slot_names, g.slot_widths, tuple(decisions), fixed)
  inp = g.node(g.inputs[0])
  out = g.node(g.output)
  return topo.Topology(model=g.name, family="graph", input_shape=tuple(inp.shape),
                       num_classes=int(out.shape[-1]), blocks=(), space=space, graph=g,
                       graph_options={"width_fractions": list(fractions),
                                      "meta_width": meta_width})
