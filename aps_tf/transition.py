r"""The APS-T transition: the optimiser that moves the projections P, Q.

P and Q get no gradient from the task loss; they move only by this step,
which anneals the sharing level from ordinal (maximal) towards independent
(minimal). The value logged as Phi is always the exact paper Eq. 4,
Phi = sum over layers of S_Q * S_P (`aps_tf.sharing.phi`); what the step
descends is chosen by `search.phi_objective`.

Why the step is taken per side, not on Eq. 4 itself
---------------------------------------------------
Eq. 4 factorises per layer, Phi_l = S_Q S_P, so Eq. 5 moves P along

    dPhi_l/dP = S_Q * dS_P/dP.

Its speed is scaled by the other side's sharing sum S_Q, which at ordinal
sharing is sum_{a<=b} min(c_a, c_b): 3 at a stem's RGB input, 228 for
{4..64}, thousands in ResNet-18's last stage. One tau then means a different
transition speed in every layer and every model family (fast body layers, a
stem and classifier 20-80x slower, ResNet-18 unstable at a tau where
ResNet-20 barely moves).

The step used here ("exact" objective) descends each side's own S:

    g_P = w * dS_P/dP  (= w * dPhi_l/dP / S_Q),

i.e. Eq. 5 with the per-layer rate tau_l = tau * w / S_Q. It descends Phi
(each side's S is minimised over that side with the other side fixed, and
Phi_l = S_Q S_P with S > 0) and has the same minimisers. Per column p_x of
one side, with G the Gram matrix of the concatenated `[P_1 | ... | P_A]`,

    dS/dp_x = sum_{y != x} k_xy G_xy p_y + (radial term along p_x),

k_xy = 2 across candidates and 4 within one. After renormalisation only the
tangential part acts: each partner column y pulls p_x apart by
k_xy G_xy (p_y - G_xy p_x), a function of the angle between the two columns
alone, and nothing of the other side reaches it. What it does not remove is
where a side starts and how far it can go: from ordinal sharing plus noise,
S(t)/S(0) of one side still depends on the initial noise sigma (the columns
separate sooner the further it puts them apart: sigma times the square root
of the meta rows per column) and on the side's columns/meta-rows ratio (more
columns than rows cannot all separate: later and less). Measured with
`python -m aps_tf.experiments.transition_speed` (docs/results/
transition_speed.json): one ResNet-18 first-stage side reaches S = 0.9 S(0)
about 2.4x later at sigma 1e-3 than at 1e-2, and 2x later at 2.33 columns
per row than at 1.0. So one tau means one speed among sides of one shape and
noise (every ImageNet side has 1.75 columns per row), not in every layer and
family; each config's tau is chosen with `python -m
aps_tf.experiments.phi_schedule`.

How the paper's tau maps onto ours
----------------------------------
The reference implementation (whose tau the paper reports) minimises, per
side, offdiag_l1 = sum_{x != y} |G_xy| ("reference" objective, available as
`search.phi_objective = "reference"`) with weight 5e-3 inside SGD with
momentum 0.9 and weight decay on P/Q, and renormalises the columns after every
step. Its pull between two columns is 2 sign(G_xy) (p_y - G_xy p_x). The
transition starts at ordinal sharing, where a column's partners have
G_xy ~ 1: there the exact pull k_xy G_xy equals the reference's 2 sign(G_xy)
across candidates. So at the same tau, weight w, momentum and weight decay,
the "exact" step starts at the reference's speed: the paper's tau maps 1:1
onto `search.phi_lr` (with `phi_weight` = 5e-3, `phi_momentum` = 0.9; with
momentum m the effective rate is tau * w / (1 - m)). Later the two differ:
the exact pull fades with G_xy (a quadratic objective) while the l1 pull does
not, so at equal tau the exact anneal slows as columns decorrelate. Measured,
the 1:1 start holds at CIFAR widths (~100 columns per side) but not at
ImageNet's (up to thousands): there the reference's anneal hardly starts
(ResNet-18 at tau 1e-3: 0.1% of Phi in the first tenth of the search phase
against the exact step's 5.4%), probably because the l1 pulls of the many
nearly orthogonal partners, of random sign, swamp the few coherent ones
(docs/method.md "Phi schedule"). The ImageNet configs therefore anneal with
their own tau by default and keep the reference's near-ordinal curve as a
`release` preset.

The update, for both objectives (PyTorch SGD semantics, as the reference):

    g <- w * d(objective)/dP + weight_decay * P
    v <- momentum * v + g          (v = g when momentum is 0)
    P <- normalize_columns(P - tau * v)
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from aps_tf import sharing


class PhiOptimizer(tf.Module):
  """Moves the projections of APS layers by one objective, with momentum.

  Args:
    aps_layers: layers with `phi_sides()` (the supernet's `aps_layers`).
    objective: 'exact' (each side's sharing sum S) or 'reference' (offdiag
      l1 of each side's Gram matrix); see the module docstring.
    lr: tau.
    weight: scale of the objective's gradient (the reference's 5e-3).
    momentum: SGD momentum on the projections (0: plain projected descent,
      paper Eq. 5 up to the per-side normalisation).
    weight_decay: coupled L2 on the projections (radial; renormalisation
      removes most of it, kept for fidelity to the reference).
  """

  def __init__(self, aps_layers: Sequence, objective: str = "exact", lr: float = 1e-3,
               weight: float = 1.0, momentum: float = 0.0, weight_decay: float = 0.0,
               name: str = "phi_optimizer"):
    super().__init__(name=name)
    self.objective = sharing.check_objective(objective)
    self.lr, self.weight = float(lr), float(weight)
    self.momentum, self.weight_decay = float(momentum), float(weight_decay)
    self._layers = []
    self._vars = []
    for layer in aps_layers:
      sides = []
      for side in layer.phi_sides():
        if isinstance(side, int):
          sides.append(side)
        else:
          var, mask, cands = side
          sides.append((len(self._vars), cands))
          self._vars.append((var, mask))
      self._layers.append(tuple(sides))
    self.velocities = ([tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False,
                                    name=f"velocity_{i}")
                        for i, (v, _) in enumerate(self._vars)] if self.momentum > 0 else [])

  @classmethod
  def from_config(cls, aps_layers: Sequence, search_cfg) -> "PhiOptimizer":
    """The optimiser a search config asks for (`search.phi_*`)."""
    s = search_cfg
    return cls(aps_layers, objective=s.phi_objective, lr=s.phi_lr, weight=s.phi_weight,
               momentum=s.phi_momentum, weight_decay=s.phi_weight_decay)

  @property
  def side_layout(self) -> list:
    """Per layer, its sides: a fixed width (int) or (index into
    `variables_and_masks`, candidates); Phi = sum over layers of the product."""
    return list(self._layers)

  @property
  def variables_and_masks(self) -> list:
    """(projection variable, column mask) of every searched side, in step order."""
    return list(self._vars)

  def step(self, with_sums: bool = False):
    """One update of every projection; returns the model's Phi (Eq. 4) before it.

    With `with_sums`, returns (Phi, [S of each side in `variables_and_masks`
    order]), both before the update.
    """
    values = [tf.convert_to_tensor(v) for v, _ in self._vars]
    sums = [None] * len(values)
    with tf.GradientTape() as tape:
      for x in values:
        tape.watch(x)
      phi = tf.constant(0.0)
      loss = tf.constant(0.0)
      for sides in self._layers:
        s_prod = tf.constant(1.0)
        for side in sides:
          if isinstance(side, int):
            s_prod = s_prod * float(side)
            continue
          index, cands = side
          s, obj = sharing.side_terms(values[index], cands, self.objective)
          sums[index] = s
          s_prod = s_prod * s
          loss = loss + obj
        phi = phi + s_prod
    if not values:
      return (phi, []) if with_sums else phi
    grads = tape.gradient(loss, values)
    for i, ((var, mask), x, g) in enumerate(zip(self._vars, values, grads)):
      g = self.weight * g
      if self.weight_decay:
        g = g + self.weight_decay * x
      if self.velocities:
        vel = self.velocities[i]
        vel.assign(self.momentum * vel + g)
        g = tf.convert_to_tensor(vel)
      var.assign(sharing.normalize_columns(x - self.lr * g, mask))
    return (phi, sums) if with_sums else phi
