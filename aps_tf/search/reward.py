"""Cost of an architecture in-graph, and the MnasNet-style reward.

See docs/method.md#controller-and-reward.

Cost tables. Every weighted layer's FLOPs/params depend on at most two
decisions (its input and its output width; a ResNet shortcut projection on
the block's input and output). So the cost of an architecture is

    cost(a) = const + sum_g table_g[a[d1_g], a[d2_g]]

over groups g of layers sharing the decision pair (d1_g, d2_g) (a layer that
depends on one decision d uses the pair (d, d), constant along the second
axis... it is read at [a_d, a_d]). The tables are built by *evaluating*
`aps_tf.flops.layer_costs` (the counter the architecture file uses) on
architectures that vary one or two decisions, so they cannot disagree with
`aps_tf.flops.count`: a test checks equality on random architectures. The
dependency structure is discovered numerically (which layers change when a
decision changes); a layer depending on three or more decisions raises.

Latency (`kind='latency'`): the same lookup over a measured per-layer table
(`aps_tf.latency.table.LatencyModel`), in milliseconds.

Reward: R = acc * (F/T)^alpha if F <= T else acc * (F/T)^beta, with acc a
fraction in [0, 1] and (alpha, beta) = (0, -0.1) by default.
"""

from __future__ import annotations

import itertools
from typing import Callable

import numpy as np
import tensorflow as tf

from aps_tf import errors
from aps_tf import flops as flops_lib
from aps_tf import schema
from aps_tf.models import topology as topo

KINDS = schema.REWARD_KINDS


def _metric(kind: str, convention: str) -> Callable[[flops_lib.LayerCost], int]:
  if kind == "params":
    return lambda c: c.params
  if kind != "flops":
    raise ValueError(f"unknown constraint kind {kind!r}; expected one of {KINDS}")
  if convention == "full":
    return lambda c: c.flops
  if convention == "search":
    return lambda c: c.flops if c.kind in ("conv", "depthwise") and c.kernel > 1 else 0
  raise ValueError(f"unknown FLOPs convention {convention!r}; expected one of "
                   f"{flops_lib.CONVENTIONS}")


class TableCost:
  """`const + sum_g tables[g, a[d1_g], a[d2_g]]` of decision vectors.

  The lookup shared by every constraint (FLOPs, params, measured latency):
  `cost(arch)` host-side, `tf_cost(arch[N, D])` in-graph (float64 [N]).
  Subclasses set `kind`, `convention` and call `_set_tables`.
  """
  kind = ""
  convention = ""

  def _set_tables(self, const: float, tables: np.ndarray, pairs: np.ndarray) -> None:
    self.const = float(const)
    self.tables_np, self.pairs_np = tables, pairs
    self._tables = tf.constant(tables)
    self._pairs = tf.constant(pairs)

  def tf_cost(self, arch) -> tf.Tensor:
    """The cost of architectures, in graph code.

    Args:
      arch: `[N, D]` int32 decisions.

    Returns:
      `[N]` float64 costs.
    """
    arch = tf.cast(arch, tf.int32)
    a1 = tf.gather(arch, self._pairs[:, 0], axis=1)  # [N, G]
    a2 = tf.gather(arch, self._pairs[:, 1], axis=1)
    g = tf.broadcast_to(tf.range(tf.shape(self._pairs)[0])[None], tf.shape(a1))
    vals = tf.gather_nd(self._tables, tf.stack([g, a1, a2], axis=-1))
    return self.const + tf.reduce_sum(vals, axis=1)

  def cost_float(self, arch) -> float:
    """The cost of one architecture, as a float.

    Args:
      arch: decision indices.

    Returns:
      The cost.
    """
    arch = np.asarray(arch, np.int64)
    vals = self.tables_np[np.arange(len(self.pairs_np)), arch[self.pairs_np[:, 0]],
                          arch[self.pairs_np[:, 1]]]
    return float(self.const + vals.sum())

  def cost(self, arch):
    """The cost of one architecture.

    Args:
      arch: decision indices.

    Returns:
      The cost, as the table holds it.
    """
    return self.cost_float(arch)

  def minimum(self):
    """The smallest cost any architecture of the space has.

    Returns:
      The cost of the cheapest candidate at every decision.
    """
    return self.cost(self.topology.space.smallest())


class CostModel(TableCost):
  """Exact in-graph cost (FLOPs or params) of decision vectors.

  `cost(arch)` for a numpy/list arch (Python int), `tf_cost(arch[N, D])`
  in-graph (float64 [N]).
  """

  def __init__(self, topology: topo.Topology, kind: str = "flops",
               convention: str = "search"):
    self.topology, self.kind, self.convention = topology, kind, convention
    metric = _metric(kind, convention)
    space = topology.space
    d_count = space.num_decisions
    counts = space.num_candidates

    def layer_values(arch) -> dict[str, int]:
      out: dict[str, int] = {}
      for c in flops_lib.layer_costs(topology, space.widths(arch)):
        out[c.name] = out.get(c.name, 0) + metric(c)
      return out

    base_arch = [0] * d_count
    base = layer_values(base_arch)
    names = set(base)
    deps: dict[str, set[int]] = {}
    for d in range(d_count):
      for a in range(1, counts[d]):
        arch = list(base_arch)
        arch[d] = a
        vals = layer_values(arch)
        names |= set(vals)
        for name in set(vals) | set(base):
          if vals.get(name, 0) != base.get(name, 0):
            deps.setdefault(name, set()).add(d)
    groups: dict[tuple[int, int], list[str]] = {}
    const = 0
    for name in sorted(names):
      dep = sorted(deps.get(name, ()))
      if not dep:
        const += base.get(name, 0)
        continue
      if len(dep) > 2:
        raise ValueError(f"layer {name} depends on {len(dep)} decisions; the cost "
                         "table supports at most two")
      groups.setdefault((dep[0], dep[-1]), []).append(name)
    a_max = max(counts)
    tables = np.zeros((len(groups), a_max, a_max), np.float64)
    pairs = np.zeros((len(groups), 2), np.int32)
    for g, ((d1, d2), layer_names) in enumerate(sorted(groups.items())):
      pairs[g] = (d1, d2)
      for a1, a2 in itertools.product(range(counts[d1]), range(counts[d2])):
        if d1 == d2 and a1 != a2:
          continue
        arch = list(base_arch)
        arch[d1], arch[d2] = a1, a2
        vals = layer_values(arch)
        tables[g, a1, a2] = sum(vals.get(n, 0) for n in layer_names)
    self._set_tables(const, tables, pairs)

  def cost(self, arch) -> int:
    """The integer cost (FLOPs or parameters) of one architecture.

    Args:
      arch: decision indices.

    Returns:
      The count.
    """
    return int(round(self.cost_float(arch)))

  def reference_cost(self, arch) -> int:
    """The same number from `aps_tf.flops.count` (slow; for checks).

    Args:
      arch: decision indices.

    Returns:
      The cost.
    """
    c = flops_lib.count(self.topology, self.topology.space.widths(arch),
                        "full" if self.kind == "params" else self.convention)
    return int(c["params" if self.kind == "params" else "flops"])


def make_cost_model(topology: topo.Topology, reward_cfg) -> TableCost:
  """The cost model `search.reward` asks for.

  Args:
    topology: the searched topology.
    reward_cfg: the `search.reward` section (kind, flops_convention, and for
      latency the table file `latency_table`, milliseconds; `aps_tf.latency`).

  Returns:
    A table cost model of FLOPs, parameters or measured latency.

  Raises:
    ConfigError: a latency table that is missing or of another search space.
  """
  if reward_cfg.kind == "latency":
    from aps_tf.latency import table as table_lib  # pylint: disable=g-import-not-at-top
    path = reward_cfg.get("latency_table")
    if not path:
      raise errors.ConfigError("search.reward.kind='latency' needs search.reward.latency_table "
                               "(a table from `python -m aps_tf.latency build`)")
    tab = table_lib.load(path, topology)
    want = reward_cfg.get("latency_format")
    if want and tab["fingerprint"]["format"] != want:
      raise errors.ConfigError(
          f"search.reward.latency_table={path} was measured for format "
          f"{tab['fingerprint']['format']!r} but search.reward.latency_format={want!r}")
    return table_lib.LatencyModel(topology, tab)
  return CostModel(topology, reward_cfg.kind, reward_cfg.flops_convention)


class BudgetError(errors.UserError, ValueError):
  """The target is below the cheapest architecture of the search space."""


def check_budget(model: TableCost, target: float) -> None:
  """Fails when no architecture of the space fits the target.

  Args:
    model: the cost model.
    target: the budget.

  Raises:
    ConfigError: the smallest architecture costs more than the target.
  """
  low = model.minimum()
  if target < low:
    raise BudgetError(
        f"search.reward.target={target:.6g} is below the smallest architecture's "
        f"{model.kind} ({model.kind}={low}, convention={model.convention!r}); no "
        f"architecture can meet it. Raise the target to at least {low}.")


def reward(accuracy, cost, target: float, alpha: float = 0.0, beta: float = -0.1):
  """The soft-constraint reward (traceable, float32).

  Args:
    accuracy: reward-split accuracy.
    cost: the architecture's cost F.
    target: the budget T.
    alpha: the exponent when F <= T.
    beta: the exponent when F > T.

  Returns:
    acc * (F/T)^alpha if F <= T else acc * (F/T)^beta.
  """
  ratio = tf.cast(cost, tf.float32) / float(target)
  exponent = tf.where(ratio <= 1.0, float(alpha), float(beta))
  return tf.cast(accuracy, tf.float32) * tf.pow(ratio, exponent)
