r"""Whether APS-T's Phi anneals over the search phase: a forecast and a check.

APS-T whose Phi barely moves is APS-O with noise: the transition the paper
describes does not happen, and nothing in the search's accuracy or reward says
so. A search therefore forecasts, before its first step, Phi(end)/Phi(0) of
its own transition (P and Q move by the transition step alone, so a replay of
that step without data is exact up to the sides it leaves out), and checks the
observed Phi at the end of the search phase. A fall of less than
`MIN_FALL` is a warning (absl log and a `phi_anneal_warning` field in
metrics.jsonl), never an error: replaying the authors' release on ImageNet
(the configs' `release` preset) is such a search on purpose.

The forecast replays the configured step (`aps_tf.transition.PhiOptimizer`)
on one representative per (candidates, meta width) of the smallest sides, as
many as fit in `BUDGET_GFLOP`, and reports Phi/Phi(0) over the layers whose
searched sides are all replayed. The 'exact' objective is integrated with
coarse plain steps (at most `MAX_COARSE` transition steps each, the
integration of `python -m aps_tf.experiments.phi_schedule`); the 'reference'
objective (not smooth) runs every step. Sides of one columns/meta-rows
ratio and noise end at about the same S/S(0) whatever their width (wider ones
start sooner), so the smallest sides stand for the rest: on the ImageNet and
CIFAR configs the forecast ends within 0.02 of the whole-model replay of
`python -m aps_tf.experiments.phi_schedule`
(docs/results/anneal_forecast.json; `--forecast` prints it).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from aps_tf import schema
from aps_tf import sharing
from aps_tf import transition

MIN_FALL = 0.05        # Phi falling by less than this over the search phase warns
BUDGET_GFLOP = 100.0   # forecast work (Gram matrices, forward and backward)
MAX_COARSE = 100       # transition steps per coarse ODE step (stable, see phi_schedule)
MIN_COARSE = 50


class StandInSide:
  """A stand-in layer with one searched side, a `PhiOptimizer` input.

  The transition moves P/Q without data, so a side can be replayed alone.
  """

  def __init__(self, init: np.ndarray, mask, candidates):
    self.var = tf.Variable(init, trainable=False)
    self.mask, self.candidates = mask, tuple(candidates)

  def phi_sides(self):
    return ((self.var, self.mask, self.candidates), 1)


def _gflop(init: np.ndarray, candidates: Sequence[int]) -> float:
  return 4.0 * init.shape[1] * sum(candidates) ** 2 / 1e9


def replay(inits: Sequence[tuple[np.ndarray, Any, Sequence[int]]], objective: str,
           num_steps: int, lr: float, weight: float, momentum: float = 0.0,
           weight_decay: float = 0.0) -> np.ndarray:
  """S of every side before each of `num_steps` transition steps and after the last.

  Args:
    inits: (initial projection `[A, M, c_max]`, column mask, candidates) per side.
    objective: 'exact' or 'reference'.
    num_steps: transition steps.
    lr, weight, momentum, weight_decay: the `PhiOptimizer` settings.

  Returns:
    `[num_steps + 1, len(inits)]` float64 sharing sums.
  """
  sides = [StandInSide(*x) for x in inits]
  opt = transition.PhiOptimizer(sides, objective, lr=lr, weight=weight, momentum=momentum,
                                weight_decay=weight_decay)
  return sums_loop(opt, sides)(tf.constant(int(num_steps))).numpy().astype(np.float64)


def sums_loop(opt: transition.PhiOptimizer, sides: Sequence[StandInSide]):
  """The transition replayed as one traced function of the step count.

  An explicit loop, traced without autograph: converting the step's call tree
  cost more than a small search's whole forecast.

  Args:
    opt: the optimiser over `sides`.
    sides: the stand-in sides `opt` steps.

  Returns:
    A function `n -> [n + 1, len(sides)]`: S of every side before each of `n`
    steps and after the last (one trace serves every `n`).
  """

  def body(i, out):
    return i + 1, out.write(i, tf.stack(opt.step(with_sums=True)[1]))

  @functools.partial(tf.function, autograph=False)
  def run(n):
    out = tf.TensorArray(tf.float32, size=n + 1)
    _, out = tf.while_loop(lambda i, _: i < n, body, (tf.constant(0), out))
    out = out.write(n, tf.stack([sharing.sharing_sum(x.var, x.candidates) for x in sides]))
    return out.stack()

  return run


@dataclasses.dataclass
class Forecast:
  """Phi(end)/Phi(0) predicted for a search phase, and on which layers."""
  ratio: float          # predicted Phi(end)/Phi(0) over the replayed layers
  layers: int           # layers replayed
  of_layers: int        # searched layers with a transition
  phi0_share: float     # their share of Phi(0)
  integration: str

  @property
  def falls_too_little(self) -> bool:
    return 1.0 - self.ratio < MIN_FALL


def forecast(phi_opt: transition.PhiOptimizer, search_cfg, phi_steps: int,
             budget_gflop: float = BUDGET_GFLOP, all_sides: bool = False) -> Forecast | None:
  """Replays `phi_steps` transition steps of the smallest sides from their current P/Q.

  Args:
    phi_opt: the search's optimiser, before any transition step.
    search_cfg: `config.search` (the `phi_*` settings).
    phi_steps: transition steps in the search phase.
    budget_gflop: work allowed; sides are added smallest first.
    all_sides: replay every side, not one per (candidates, meta width) (the
      forecast is then the transition itself, where every step is replayed).

  Returns:
    The forecast, or None when there is nothing to forecast (no searched side
    or no transition step).
  """
  s = search_cfg
  layout = phi_opt.side_layout
  variables = phi_opt.variables_and_masks
  if not variables or phi_steps < 1:
    return None
  # One representative per (candidates, meta width): such sides start from
  # the same ordinal point plus i.i.d. noise, and anneal alike.
  cands_of = {x[0]: tuple(x[1]) for sides in layout for x in sides if not isinstance(x, int)}
  reps, rep_by_key, rep_of = [], {}, {}
  for index, (var, mask) in enumerate(variables):
    key = index if all_sides else (cands_of[index], int(var.shape[1]))
    if key not in rep_by_key:
      rep_by_key[key] = len(reps)
      reps.append((np.asarray(var.numpy()), mask, cands_of[index]))
    rep_of[index] = rep_by_key[key]
  objective = s.phi_objective
  # Coarse steps only where there are many (few steps: every one, momentum included).
  exact = objective == "exact" and phi_steps > 2 * MIN_COARSE
  num = max(MIN_COARSE, -(-phi_steps // MAX_COARSE)) if exact else phi_steps
  # Layers by the cost of their largest side; take the cheapest layers' sides.
  def layer_cost(sides):
    return sum(_gflop(reps[rep_of[x[0]]][0], reps[rep_of[x[0]]][2]) for x in sides
               if not isinstance(x, int))
  searched = [sides for sides in layout if any(not isinstance(x, int) for x in sides)]
  chosen: set[int] = set()
  for sides in sorted(searched, key=layer_cost):
    need = chosen | {rep_of[x[0]] for x in sides if not isinstance(x, int)}
    cost = num * sum(_gflop(reps[i][0], reps[i][2]) for i in need)
    if chosen and cost > budget_gflop:
      break
    chosen = need
  live = sorted(chosen)
  k = phi_steps / num
  if exact:
    sums = replay([reps[i] for i in live], objective, num,
                  lr=k * s.phi_lr / (1.0 - s.phi_momentum), weight=s.phi_weight)
    integration = f"ODE: {num} plain steps of {k:.3g} transition steps"
  else:
    sums = replay([reps[i] for i in live], objective, num, lr=s.phi_lr, weight=s.phi_weight,
                  momentum=s.phi_momentum, weight_decay=s.phi_weight_decay)
    integration = f"every one of {num} steps"
  column = {rep: j for j, rep in enumerate(live)}

  def phi(row, layers):
    return sum(math.prod(x if isinstance(x, int) else row[column[rep_of[x[0]]]]
                         for x in sides) for sides in layers)

  kept = [sides for sides in searched
          if all(isinstance(x, int) or rep_of[x[0]] in column for x in sides)]
  s0 = [float(sharing.sharing_sum(tf.constant(init), c)) for init, _, c in reps]
  all0 = sum(math.prod(x if isinstance(x, int) else s0[rep_of[x[0]]] for x in sides)
             for sides in searched)
  return Forecast(ratio=float(phi(sums[-1], kept) / phi(sums[0], kept)), layers=len(kept),
                  of_layers=len(searched), phi0_share=float(phi(sums[0], kept) / all0),
                  integration=integration)


class AnnealCheck:
  """The forecast at the start of a search and the observed fall at its end.

  Args:
    phi_opt: the search's `PhiOptimizer`, constructed and not yet stepped
      (before any checkpoint restore).
    phi_fn: returns the model's current Phi (Eq. 4).
    search_cfg: `config.search`.
    warmup_steps, total_steps: the search's iteration counts.
  """

  def __init__(self, phi_opt: transition.PhiOptimizer, phi_fn, search_cfg, warmup_steps: int,
               total_steps: int):
    self.phi_fn = phi_fn
    self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)
    self.phi0 = float(phi_fn())
    phi_steps = -(-(self.total_steps - self.warmup_steps) // int(search_cfg.phi_every))
    self.forecast = forecast(phi_opt, search_cfg, phi_steps)
    self.warning = None
    f = self.forecast
    if f is not None and f.falls_too_little:
      self.warning = (
          f"APS-T: Phi is predicted to fall by less than {100 * MIN_FALL:g}% over the "
          f"search phase (Phi(end)/Phi(0) = {f.ratio:.4f}; {phi_steps} transition steps at search.phi_lr="
          f"{search_cfg.phi_lr:g}, objective {search_cfg.phi_objective!r}; replayed on "
          f"{f.layers} of {f.of_layers} layers, {100 * f.phi0_share:.0f}% of Phi(0)): "
          f"sharing stays near ordinal, this search is close to APS-O. Raise "
          f"search.phi_lr (python -m aps_tf.experiments.phi_schedule shows the curve).")
      logging.warning("%s", self.warning)
    self._started = False

  @classmethod
  def for_searcher(cls, searcher) -> "AnnealCheck | None":
    """The check of a `SearchTask` (None unless its sharing is transitional)."""
    if not schema.is_transitional(searcher.cfg.search.sharing):
      return None
    return cls(searcher.phi_opt, searcher.net.phi, searcher.cfg.search, searcher.warmup_steps,
               searcher.total_steps)

  def record(self, step: int) -> dict[str, Any]:
    """Fields for the metrics record at `step` (search iterations done).

    The first search-phase record written by this process carries the
    forecast (`phi_anneal_forecast`) and `phi_anneal_warning` (a message, or
    None); the record at the end of the search phase carries the observed
    `phi_anneal_observed` = Phi(end)/Phi(0) and, if it fell by less than
    `MIN_FALL`, a `phi_anneal_warning`.
    """
    out: dict[str, Any] = {}
    if step <= self.warmup_steps:
      return out
    if not self._started:
      self._started = True
      out["phi_anneal_forecast"] = (None if self.forecast is None
                                    else round(self.forecast.ratio, 6))
      out["phi_anneal_warning"] = self.warning
    if step >= self.total_steps:
      observed = float(self.phi_fn()) / self.phi0
      out["phi_anneal_observed"] = round(observed, 6)
      if 1.0 - observed < MIN_FALL:
        out["phi_anneal_warning"] = (
            f"APS-T: Phi fell by less than {100 * MIN_FALL:g}% over the search phase "
            f"(Phi(end)/Phi(0) = {observed:.4f}): sharing stayed near ordinal, this search "
            f"was close to APS-O.")
        logging.warning("%s", out["phi_anneal_warning"])
    return out
