"""The cost lookup every search constraint shares: pairwise tables of decisions.

Every weighted layer's cost (FLOPs, params, or its measured latency) depends on
at most two decisions, its input and its output width, so the cost of an
architecture `a` is

    cost(a) = const + sum_g tables[g, a[d1_g], a[d2_g]]

over groups g of layers sharing the decision pair (d1_g, d2_g) (a layer that
depends on one decision d uses the pair (d, d) and is read at [a_d, a_d]).
`TableCost` is that lookup, host-side and in-graph (two gathers, traced once
for every architecture). It knows no model and no unit of cost: the FLOPs and
params tables are built by `aps_tf.search.reward.CostModel`, the latency
tables by `aps_tf.latency.table.LatencyModel`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class TableCost:
  """`const + sum_g tables[g, a[d1_g], a[d2_g]]` of decision vectors.

  `cost(arch)` host-side, `tf_cost(arch[N, D])` in-graph (float64 [N]).
  Subclasses set `kind`, `convention` and `topology` and call `_set_tables`.
  """
  kind = ""
  convention = ""

  def _set_tables(self, const: float, tables: np.ndarray, pairs: np.ndarray) -> None:
    """Sets the lookup.

    Args:
      const: the cost no decision changes.
      tables: `[G, A_max, A_max]` cost of group g at candidates (a1, a2).
      pairs: `[G, 2]` the decisions (d1, d2) group g reads.
    """
    self.const = float(const)
    self.tables_np, self.pairs_np = tables, pairs
    self._tables = tf.constant(tables)
    self._pairs = tf.constant(pairs)

  def tf_cost(self, arch) -> tf.Tensor:
    """The cost of decision vectors, traceable.

    Args:
      arch: `[N, D]` integer decision vectors.

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
    """The cost of one decision vector, host-side, as a float."""
    arch = np.asarray(arch, np.int64)
    vals = self.tables_np[np.arange(len(self.pairs_np)), arch[self.pairs_np[:, 0]],
                          arch[self.pairs_np[:, 1]]]
    return float(self.const + vals.sum())

  def cost(self, arch):
    """The cost of one decision vector (subclasses may round)."""
    return self.cost_float(arch)

  def minimum(self):
    """Cost of the smallest architecture (every decision at its first candidate)."""
    return self.cost(self.topology.space.smallest())
