r"""The APS-T anneal of a config, before spending GPU hours on it.

Runs only the transition steps of a config's whole search phase (P and Q move
by the transition alone: no data, no training), for both objectives
('exact' and 'reference', every other `search.phi_*` setting as configured),
and reports Phi(t)/Phi(0), the exact paper Eq. 4 relative to the start of the
search phase, for the model and per layer kind (stem, body, shortcut,
classifier) at 10/25/50/75/100% of the search phase, the search iterations at
which Phi has made 50% and 90% of its total drop, and the largest rise.

  python -m aps_tf.experiments.phi_schedule --config=configs/cifar10_resnet20_50.py \
      [--workdir=DIR] [--json] [--config.search.phi_lr=...]

Writes DIR/phi_schedule.png (default DIR: ./phi_schedule_<config name>).
With --json, prints one JSON object per objective per line.

How it is computed (and why that is faithful):
  * A side's step depends on that side's own Gram matrix only (for both
    objectives, `aps_tf.transition`), so every side anneals independently and
    a layer's Phi is S_Q(t) * S_P(t). Sides with the same candidates and meta
    width start from the same ordinal point plus i.i.d. noise, so one
    representative per (candidates, meta width) is simulated, from the
    supernet's own initial projection (--all_sides simulates every side).
  * The search phase has (epochs - warmup_epochs) * steps_per_epoch
    iterations and a transition step every `phi_every` of them. For the
    'reference' objective (l1, not smooth: coarse steps are unstable on it),
    and for 'exact' when there are few transition steps (at most
    2 x --coarse_steps, or at most --every_step_gflop of work), every one is
    run exactly
    (momentum and weight decay included). Otherwise the anneal, a small step
    on a smooth objective, is integrated as an ODE in (steps x tau): plain
    projected steps of k transition steps each (rate k tau w / (1 - momentum)),
    repeated with k halved until halving moves no curve by 0.01 of Phi(0) or more;
    the output says which and by how much.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Sequence

from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags
import numpy as np
import tensorflow as tf

from aps_tf import anneal
from aps_tf import cli
from aps_tf import data
from aps_tf import errors
from aps_tf import fileio
from aps_tf import layers as aps_layers
from aps_tf import models
from aps_tf import schema
from aps_tf import sharing
from aps_tf import transition
from aps_tf.models import supernet as supernet_lib
from aps_tf.models import topology as topo
from aps_tf.search import settings

FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)
KINDS = ("stem", "body", "shortcut", "classifier")
# Halving the coarse step must move every curve by less than this (in units of
# Phi(0): 0.01 = one percentage point of Phi/Phi(0)).
TOLERANCE = 0.01
MAX_COARSE = 100
# Runs costing more than this (GFLOP) report progress every tenth of their steps.
PROGRESS_GFLOP = 2000.0

def _define_flags() -> None:
  """The binary's flags (defined only when run as the binary, so the module can
  be imported next to other binaries that also have --config)."""
  config_flags.DEFINE_config_file("config", None, "Config file (a search config).")
  flags.DEFINE_string("workdir", None, "Where the PNG goes (default "
                      "./phi_schedule_<config name>).")
  flags.DEFINE_bool("json", False, "Print one JSON object per objective per line.")
  flags.DEFINE_integer("coarse_steps", 50, "Coarse steps of the first ODE "
                       "integration (doubled until converged).")
  flags.DEFINE_float("every_step_gflop", 3000.0, "Run every transition step "
                     "exactly when that costs at most this many GFLOP; else "
                     "integrate the ODE.")
  flags.DEFINE_bool("all_sides", False, "Simulate every side, not one per "
                    "(candidates, meta width).")
  flags.DEFINE_list("objectives", list(sharing.OBJECTIVES), "Objectives to run.")
  flags.DEFINE_integer("max_columns", 0, "Simulate only the sides of at most this many "
                       "columns (the sum of their candidate widths; 0: all). Layers with a "
                       "larger side leave the model and kind curves (the output says which "
                       "share of Phi(0) is left); for objectives too costly at full size.")
  flags.DEFINE_bool("per_side", False, "Also report S(t)/S(0) of every simulated "
                    "representative side.")
  flags.DEFINE_bool("forecast", False, "Also print the forecast a search of this config "
                    "makes at its start (aps_tf.anneal) as one JSON line; with "
                    "--objectives= (empty) only that.")


@dataclasses.dataclass
class Schedule:
  """Phi(t)/Phi(0) of one objective over the search phase."""
  objective: str
  search_steps: int            # search iterations
  steps: np.ndarray            # [T] search iterations of the recorded points
  model: np.ndarray            # [T] model Phi / Phi(0)
  kinds: dict                  # kind -> [T] ratio (kinds present only)
  integration: str             # 'every step' | 'ODE, ...'
  change_on_halving: float | None  # max relative curve change when the step was halved
  sides: dict = dataclasses.field(default_factory=dict)  # side label -> [T] S(t)/S(0)
  partial: dict | None = None  # what --max_columns left out (None: every layer)

  def ratio_at(self, fraction: float, curve: np.ndarray | None = None) -> float:
    curve = self.model if curve is None else curve
    return float(np.interp(fraction * self.search_steps, self.steps, curve))

  def drop_step(self, share: float) -> int | None:
    """First search iteration by which Phi made `share` of its total drop (None: no drop)."""
    total = 1.0 - self.model[-1]
    if total <= 0:
      return None
    hit = np.nonzero(1.0 - self.model >= share * total - 1e-12)[0]
    return int(self.steps[hit[0]])

  @property
  def max_rise(self) -> float:
    return float(np.max(self.model) - 1.0)

  def record(self, config_name: str) -> dict:
    return {"config": config_name, "objective": self.objective,
            "search_steps": int(self.search_steps),
            "phi_ratio_at": {str(f): round(self.ratio_at(f), 6) for f in FRACTIONS},
            "step_50pct_drop": self.drop_step(0.5), "step_90pct_drop": self.drop_step(0.9),
            "max_rise": round(self.max_rise, 6)} | (
                {"partial": self.partial} if self.partial else {})


def search_phase(cfg) -> tuple[int, int, int]:
  """(search iterations, steps per epoch, transition steps) without reading data."""
  s = cfg.search
  info = data.dataset_info(cfg.data)
  spe = int(s.steps_per_epoch or info.split_sizes["train"] // int(s.batch_size))
  if spe < 1:
    raise errors.ConfigError(f"search.batch_size={s.batch_size} exceeds the train split "
                             f"({info.split_sizes['train']} examples)")
  steps = (int(s.epochs) - int(s.warmup_epochs)) * spe
  return steps, spe, -(-steps // int(s.phi_every))


def layer_kinds(net: supernet_lib.Supernet) -> list[tuple[aps_layers.APSLayer, str]]:
  """(APS layer, kind) for every searched layer of a supernet."""
  out = []
  for block, unit in zip(net.topology.blocks, net.units):
    for key, part in unit.items():
      if isinstance(part, aps_layers.APSDense):
        out.append((part, "classifier"))
      elif isinstance(block, topo.Stem):
        out.append((part.conv, "stem"))
      else:
        out.append((part.conv, "shortcut" if key == "shortcut" else "body"))
  return out


class Simulator:
  """The sides of a config's supernet and their transition, one objective at a time."""

  def __init__(self, cfg, all_sides: bool = False, max_columns: int = 0):
    self.cfg = cfg = settings.resolve_config(cfg)
    if not schema.is_transitional(cfg.search.sharing):
      raise errors.ConfigError(f"search.sharing={cfg.search.sharing!r}: only the "
                               "'transitional' mode has a Phi schedule")
    self.search_steps, self.steps_per_epoch, self.phi_steps = search_phase(cfg)
    if self.search_steps < 1:
      raise errors.ConfigError("the search phase is empty (search.epochs == "
                               "search.warmup_epochs)")
    info = data.dataset_info(cfg.data)
    topology = models.topology_from_config(cfg.model, info.image_shape, info.num_classes)
    net = models.supernet_from_config(cfg, topology, build=False)
    self.reps: list[tuple[np.ndarray, tf.Tensor, tuple]] = []
    keys: dict = {}
    self.layers = []   # (kind, [rep index or fixed width, ...])
    for layer, kind in layer_kinds(net):
      sides = []
      for side in layer.phi_sides():
        if isinstance(side, int):
          sides.append(float(side))
          continue
        var, mask, cands = side
        key = (len(self.reps),) if all_sides else (cands, var.shape[1])
        if key not in keys:
          keys[key] = len(self.reps)
          self.reps.append((np.asarray(var), mask, cands))
        sides.append(keys[key])
      self.layers.append((kind, sides))
    self.num_sides = sum(1 for _, sides in self.layers for s in sides if isinstance(s, int))
    del net
    # --max_columns: representatives too large to simulate, and the layers they leave out.
    self.skipped = {i for i, (_, _, c) in enumerate(self.reps)
                    if max_columns and sum(c) > max_columns}
    self.partial = None
    if self.skipped:
      s0 = [float(sharing.sharing_sum(tf.constant(init), c)) for init, _, c in self.reps]
      phi0 = lambda layers: sum(float(np.prod([s0[x] if isinstance(x, int) else x  # pylint: disable=g-long-lambda
                                               for x in sides])) for _, sides in layers)
      kept = [(k, sides) for k, sides in self.layers
              if not any(isinstance(x, int) and x in self.skipped for x in sides)]
      self.partial = {
          "max_columns": int(max_columns), "layers": len(kept), "of_layers": len(self.layers),
          "phi0_share": round(phi0(kept) / phi0(self.layers), 6),
          "skipped_sides": [f"{sum(self.reps[i][2])} columns, meta {self.reps[i][0].shape[1]}"
                            for i in sorted(self.skipped)]}
      self.layers = kept

  def side_label(self, i: int) -> str:
    init, _, cands = self.reps[i]
    return f"{sum(cands)} cols, meta {init.shape[1]}"

  def _curves(self, sums: np.ndarray) -> tuple[np.ndarray, dict]:
    """Model and per-kind Phi/Phi(0) from per-representative S, `[T, reps]`."""
    totals = {}
    for kind, sides in self.layers:
      value = np.ones(sums.shape[0])
      for s in sides:
        value = value * (sums[:, s] if isinstance(s, int) else s)
      totals[kind] = totals.get(kind, 0.0) + value
    model = sum(totals.values())
    return model / model[0], {k: totals[k] / totals[k][0] for k in KINDS if k in totals}

  def _run(self, objective: str, num: int, every: int) -> np.ndarray:
    """S of every representative before each of `num` steps and after the last.

    every == 1: the configured optimiser exactly; else plain projected steps
    standing for `every` transition steps each (the ODE integration).
    """
    s = self.cfg.search
    live = [i for i in range(len(self.reps)) if i not in self.skipped]
    sides = [anneal.StandInSide(*self.reps[i]) for i in live]
    if every == 1:
      opt = transition.PhiOptimizer(sides, objective, lr=s.phi_lr, weight=s.phi_weight,
                                    momentum=s.phi_momentum, weight_decay=s.phi_weight_decay)
    else:
      opt = transition.PhiOptimizer(sides, objective,
                                    lr=every * s.phi_lr / (1.0 - s.phi_momentum),
                                    weight=s.phi_weight)

    run = anneal.sums_loop(opt, sides)

    # In chunks, so a long run shows progress (one trace serves every length).
    chunk = max(1, -(-num // 10)) if num * self.step_gflop() > PROGRESS_GFLOP else num
    rows, done, t0 = [], 0, time.time()
    while done < num:
      n = min(chunk, num - done)
      out = run(tf.constant(n)).numpy().astype(np.float64)
      rows.append(out[:-1])
      done += n
      if chunk < num:
        _progress(f"{objective}: {done}/{num} steps, {time.time() - t0:.0f} s")
    rows.append(out[-1:])
    sums = np.full((num + 1, len(self.reps)), np.nan)
    sums[:, live] = np.concatenate(rows)
    return sums

  def integrate(self, objective: str, num: int, fraction: float = 1.0) -> Schedule:
    """The ODE over the first `fraction` of the search phase in `num` coarse steps."""
    every = int(self.cfg.search.phi_every)
    k = fraction * self.phi_steps / num
    sums = self._run(objective, num, k)
    model, kinds = self._curves(sums)
    steps = np.minimum(np.arange(num + 1) * k * every, self.search_steps)
    return Schedule(objective, self.search_steps, steps, model, kinds,
                    f"ODE: {num} coarse steps of {k:.3g} transition steps", None,
                    self._side_curves(sums), self.partial)

  def _side_curves(self, sums: np.ndarray) -> dict:
    return {self.side_label(i): sums[:, i] / sums[0, i] for i in range(len(self.reps))
            if i not in self.skipped}

  def step_gflop(self) -> float:
    """Approximate cost of one transition step (Gram matrix forward and backward)."""
    return sum(4.0 * init.shape[1] * sum(c) ** 2 for i, (init, _, c) in enumerate(self.reps)
               if i not in self.skipped) / 1e9

  def schedule(self, objective: str, coarse_steps: int = 50,
               every_step_gflop: float = 3000.0) -> Schedule:
    """Phi(t)/Phi(0) of `objective` over the whole search phase."""
    every = int(self.cfg.search.phi_every)
    n = self.phi_steps
    # The reference's l1 objective is not smooth (sign(G) flips as columns
    # decorrelate): coarse steps are unstable on it (5 coarse steps on
    # ResNet-18 take Phi to 9e4 x Phi(0)), so it always runs every step.
    if (objective == "reference" or n <= 2 * coarse_steps
        or n * self.step_gflop() <= every_step_gflop):
      t0 = time.time()
      sums = self._run(objective, n, 1)
      model, kinds = self._curves(sums)
      _progress(f"{objective}: every one of {n} steps in {time.time() - t0:.0f} s")
      steps = np.minimum(np.arange(n + 1) * every, self.search_steps)
      return Schedule(objective, self.search_steps, steps, model, kinds, "every step", None,
                      self._side_curves(sums), self.partial)
    # At most MAX_COARSE transition steps per coarse step: beyond that plain
    # Euler steps on Phi are unstable (ResNet-20 at 1,940 per step: Phi x 2e3).
    num = max(coarse_steps, -(-n // MAX_COARSE))
    prev = None
    while True:
      k = n / num
      t0 = time.time()
      cur = self.integrate(objective, num)
      change = None if prev is None else _max_change(prev, cur)
      _progress(f"{objective}: {num} coarse steps in {time.time() - t0:.0f} s"
                + ("" if change is None else f", change on halving {change:.4f}"))
      if prev is not None:
        if change < TOLERANCE or 2 * num > n:
          cur.change_on_halving = change
          ok = "converged" if change < TOLERANCE else "NOT converged"
          cur.integration = (f"ODE: {num} coarse steps of {k:.3g} transition steps; "
                             f"halving the step moved Phi/Phi(0) by at most {change:.4f} "
                             f"({ok}, tolerance {TOLERANCE:g})")
          return cur
      prev = cur
      num *= 2


def search_forecast(cfg) -> dict:
  """The forecast a search of `cfg` logs at its start (`aps_tf.anneal.forecast`)."""
  cfg = settings.resolve_config(cfg)
  info = data.dataset_info(cfg.data)
  topology = models.topology_from_config(cfg.model, info.image_shape, info.num_classes)
  net = supernet_lib.Supernet(topology, "transitional", noise_std=cfg.search.noise_std,
                              seed=cfg.seed)
  opt = transition.PhiOptimizer.from_config(net.aps_layers, cfg.search)
  f = anneal.forecast(opt, cfg.search, search_phase(cfg)[2])
  return {"forecast_phi_ratio_end": round(f.ratio, 6), "layers": f.layers,
          "of_layers": f.of_layers, "phi0_share": round(f.phi0_share, 6),
          "warns": f.falls_too_little, "integration": f.integration}


def _progress(message: str) -> None:
  sys.stderr.write(f"phi_schedule: {message}\n")
  sys.stderr.flush()


def _max_change(coarse: Schedule, fine: Schedule) -> float:
  """Largest difference of the model and kind curves (Phi/Phi(0)) on the coarse grid."""
  worst = 0.0
  for name, curve in [("model", coarse.model)] + list(coarse.kinds.items()):
    other = fine.model if name == "model" else fine.kinds[name]
    ref = np.interp(coarse.steps, fine.steps, other)
    worst = max(worst, float(np.max(np.abs(curve - ref))))
  return worst


def table(sim: Simulator, results: Sequence[Schedule], per_side: bool = False) -> str:
  """Human-readable report of every objective."""
  s = sim.cfg.search
  lines = [f"search phase: {sim.search_steps} iterations ({s.epochs - s.warmup_epochs} epochs x "
           f"{sim.steps_per_epoch}), a transition step every {s.phi_every} -> "
           f"{sim.phi_steps} steps; tau={s.phi_lr:g} weight={s.phi_weight:g} "
           f"momentum={s.phi_momentum:g} weight_decay={s.phi_weight_decay:g} "
           f"noise={s.noise_std:g}",
           f"sides: {sim.num_sides} simulated as {len(sim.reps)} "
           f"{'sides' if len(sim.reps) == sim.num_sides else 'representatives'}"]
  if sim.partial:
    p = sim.partial
    lines.append(f"PARTIAL (--max_columns={p['max_columns']}): {p['layers']} of "
                 f"{p['of_layers']} searched layers, {100 * p['phi0_share']:.1f}% of Phi(0); "
                 f"not simulated: {'; '.join(p['skipped_sides'])}")
  header = "objective   curve       " + " ".join(f"{int(100 * f):>6}%" for f in FRACTIONS)
  for r in results:
    lines += ["", f"[{r.objective}] integration: {r.integration}", header]
    for name, curve in [("model", r.model)] + list(r.kinds.items()):
      vals = " ".join(f"{r.ratio_at(f, curve):7.4f}" for f in FRACTIONS)
      lines.append(f"{r.objective:<11} {name:<11} {vals}")
    pct = lambda k: "-" if k is None else f"{k} ({100 * k / r.search_steps:.1f}%)"
    lines.append(f"50% of the drop at iteration {pct(r.drop_step(0.5))}, 90% at "
                 f"{pct(r.drop_step(0.9))}; max rise {100 * r.max_rise:.2f}%")
    if per_side:
      lines.append(f"per side, S(t)/S(0):{'':<10}" + " ".join(f"{int(100 * f):>6}%"
                                                             for f in FRACTIONS))
      for label, curve in r.sides.items():
        vals = " ".join(f"{r.ratio_at(f, curve):7.4f}" for f in FRACTIONS)
        lines.append(f"  {label:<28} {vals}")
  return "\n".join(lines)


def plot(results: Sequence[Schedule], path: str, title: str) -> None:
  fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
  for ax, r in zip(axes[0], results):
    x = r.steps / r.search_steps
    ax.plot(x, r.model, "k", lw=2, label="model")
    for name, curve in r.kinds.items():
      ax.plot(x, curve, lw=1, label=name)
    ax.set_title(f"{title}: {r.objective}")
    ax.set_xlabel("fraction of the search phase")
    ax.set_ylabel("Phi(t) / Phi(0)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fileio.save_figure(fig, path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  f = flags.FLAGS
  if f.config is None:
    raise errors.UserError("--config is required (a search config file, e.g. "
                           "configs/cifar10_resnet20_50.py)")
  path = flags.FLAGS["config"].config_filename
  name = os.path.splitext(os.path.basename(path))[0]
  for objective in f.objectives:
    if objective not in sharing.OBJECTIVES:
      raise errors.UserError(f"--objectives: unknown {objective!r}; expected some of "
                             f"{sharing.OBJECTIVES}")
  try:
    sim = Simulator(f.config, all_sides=f.all_sides, max_columns=f.max_columns)
  except ValueError as e:  # data/model config checks below the search config
    if isinstance(e, errors.UserError):
      raise
    raise errors.ConfigError(f"{path}: {e}") from e
  t0 = time.time()
  if f.forecast:
    print(json.dumps({"config": path, **search_forecast(f.config)}), flush=True)
    if not f.objectives:
      return 0
  results = [sim.schedule(o, f.coarse_steps, f.every_step_gflop) for o in f.objectives]
  workdir = f.workdir or f"phi_schedule_{name}"
  try:
    fileio.makedirs(workdir)
    png = os.path.join(workdir, "phi_schedule.png")
    plot(results, png, name)
  except OSError as e:
    raise errors.WorkdirError(f"--workdir={workdir}: cannot write: {e}") from e
  if f.json:
    for r in results:
      print(json.dumps(r.record(path)))
  else:
    print(f"{path}: Phi(t)/Phi(0) over the search phase (exact Eq. 4)")
    print(table(sim, results, per_side=f.per_side))
    print(f"plot: {png}  ({time.time() - t0:.0f} s)")
  return 0


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
