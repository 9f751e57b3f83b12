"""End-to-end check of a latency table against whole-model measurements.

Children (`sample_children`): a third are *uniform-multiplier* children,
every decision at the same relative position of its candidates (the
smallest network, the largest, and evenly between), and the rest
*stratified random* children, child i drawn around the i-th of evenly spaced
relative positions with one candidate of jitter per decision. Together they
span the space's latency range; uniformly random children alone crowd into
a narrow band in the middle, where timer noise decides the order.

Each child is converted whole, with the exporter's converter settings, and
timed under the table's own settings (format, threads, invocations per
timing). Timing is repeated (`time_children`) in rounds over all children
(interleaved, so a change of machine load hits every child alike) until
each child's own noise (the standard error of its median over rounds, from
the median absolute deviation) is below half the gap to its nearest
neighbour in latency, or below `noise_floor` of its latency, or the
round cap is reached. The noise and the fraction of children it resolves
are reported.

Reported: Spearman and Kendall tau, median and max relative error
|pred - meas| / meas, the measured range, the signed relative error of the
uniform-multiplier children from smallest to largest (a table that is
wrong at small widths shows here as a trend), Spearman of the random
children alone, and a scatter plot with each child's noise. Only tables
measured on this machine can be checked here (the fingerprint must match).
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

from absl import logging
import numpy as np

from aps_tf import fileio
from aps_tf.latency import build as build_lib
from aps_tf.latency import measure
from aps_tf.latency import table as table_lib
from aps_tf.models import dense

MIN_ROUNDS = 3
MAX_ROUNDS = 15
NOISE_FLOOR = 0.005  # relative: differences below 0.5% are not worth ranking


def _content(t, widths, fmt: str, path: str | None) -> bytes:
  """The converted child, cached at `path` (conversion dominates the time)."""
  if path and fileio.exists(path):
    return fileio.read_bytes(path)
  content = measure.convert(dense.build(t, widths), fmt)
  if path:
    fileio.write_bytes(path, content)
  return content


def sample_children(space, n: int, seed: int = 1) -> list[dict]:
  """Children spanning the space's latency range (reproducible).

  Args:
    space: the search space (`aps_tf.spaces`).
    n: how many children (distinct, fewer if the space has fewer).
    seed: seed of the random children.

  Returns:
    Dicts with `decisions` and `kind` ("uniform" with its `multiplier` in
    [0, 1], or "random" with the relative position it was drawn around).
  """
  counts = np.array(space.num_candidates)
  out, seen = [], set()

  def add(arch, **info):
    key = tuple(int(a) for a in arch)
    if key in seen or len(out) >= n:
      return False
    seen.add(key)
    out.append(dict(decisions=list(key), **info))
    return True

  n_uniform = min(max(2, n // 3), int(counts.max()))
  for m in np.linspace(0.0, 1.0, n_uniform):
    add(np.rint(m * (counts - 1)).astype(int), kind="uniform", multiplier=float(m))
  rng = np.random.default_rng(seed)
  n_random = n - len(out)
  for i in range(max(n_random, 0)):
    for _ in range(100):  # a few redraws when a child repeats
      pos = (i + rng.uniform()) / n_random
      arch = np.clip(np.rint(pos * (counts - 1) + rng.uniform(-1.0, 1.0, len(counts))),
                     0, counts - 1).astype(int)
      if add(arch, kind="random", multiplier=float(pos)):
        break
  return out


def robust_noise(samples: Sequence[float]) -> float:
  """Standard error of the median of `samples`, from their median absolute deviation."""
  x = np.asarray(samples, np.float64)
  if len(x) < 2:
    return float("inf")
  sigma = 1.4826 * np.median(np.abs(x - np.median(x)))
  return float(1.2533 * sigma / np.sqrt(len(x)))


def _unsettled(est: np.ndarray, noise: np.ndarray, rounds: np.ndarray, min_rounds: int,
               max_rounds: int, noise_floor: float) -> np.ndarray:
  order = np.argsort(est)
  gap = np.full(len(est), np.inf)
  s = est[order]
  if len(s) > 1:
    d = np.diff(s)
    gap[order] = np.minimum(np.r_[np.inf, d], np.r_[d, np.inf])
  resolved = (noise <= 0.5 * gap) | (noise <= noise_floor * est)
  return (rounds < min_rounds) | (~resolved & (rounds < max_rounds))


def time_children(timers: Sequence[Callable[[], float]], min_rounds: int = MIN_ROUNDS,
                  max_rounds: int = MAX_ROUNDS, noise_floor: float = NOISE_FLOOR,
                  progress: Callable[[int], None] | None = None) -> list[dict]:
  """Times every child in interleaved rounds until its noise is below its gap.

  Args:
    timers: one callable per child returning one timing in ms (a median of
      the table's invocations).
    min_rounds: rounds every child gets.
    max_rounds: the cap for children that never resolve (true near-ties).
    noise_floor: a child whose noise is below this fraction of its latency
      is resolved whatever its gap.
    progress: called with the number of timings done after each round.

  Returns:
    Per child: `measured_ms` (median over rounds), `noise_ms`
    (`robust_noise`), `rounds` and `resolved` (noise below half the gap to
    its nearest neighbour or below the floor).
  """
  samples: list[list[float]] = [[] for _ in timers]
  while True:
    est = np.array([np.median(s) if s else 0.0 for s in samples])
    noise = np.array([robust_noise(s) for s in samples])
    rounds = np.array([len(s) for s in samples])
    todo = np.flatnonzero(_unsettled(est, noise, rounds, min_rounds, max_rounds, noise_floor))
    if not len(todo):
      break
    for i in todo:
      samples[i].append(float(timers[i]()))
    if progress is not None:
      progress(len(todo))
  still = _unsettled(est, noise, rounds, 0, max_rounds + 1, noise_floor)
  return [{"measured_ms": float(e), "noise_ms": float(z), "rounds": int(r),
           "resolved": not bool(u)} for e, z, r, u in zip(est, noise, rounds, still)]


def spearman(x, y) -> float:
  """Rank correlation (timings are continuous: ties are not averaged)."""
  if len(x) < 2:
    return float("nan")
  rx, ry = (np.argsort(np.argsort(v)).astype(np.float64) for v in (x, y))
  return float(np.corrcoef(rx, ry)[0, 1])


def kendall_tau(x, y) -> float:
  """Kendall's tau-b: (concordant - discordant) pairs over all pairs, ties corrected."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if len(x) < 2:
    return float("nan")
  i, j = np.triu_indices(len(x), k=1)
  sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
  denom = np.sqrt(np.sum(sx != 0) * np.sum(sy != 0))
  return float(np.sum(sx * sy) / denom) if denom else float("nan")


def summarise(rows: list[dict]) -> dict:
  """The statistics of measured vs predicted rows (see the module docstring)."""
  pred = np.array([r["predicted_ms"] for r in rows])
  meas = np.array([r["measured_ms"] for r in rows])
  noise = np.array([r["noise_ms"] for r in rows])
  signed = (pred - meas) / meas
  rel = np.abs(signed)
  uniform = sorted((r for r in rows if r.get("kind") == "uniform"),
                   key=lambda r: r["multiplier"])
  rnd = [k for k, r in enumerate(rows) if r.get("kind") == "random"]
  return {
      "spearman": spearman(pred, meas), "kendall_tau": kendall_tau(pred, meas),
      "median_rel_error": float(np.median(rel)), "max_rel_error": float(np.max(rel)),
      "mean_signed_rel_error": float(np.mean(signed)),
      "measured_min_ms": float(meas.min()), "measured_max_ms": float(meas.max()),
      "measured_range_ratio": float(meas.max() / meas.min()),
      "mean_measured_ms": float(meas.mean()), "mean_predicted_ms": float(pred.mean()),
      "median_noise_rel": float(np.median(noise / meas)),
      "max_noise_rel": float(np.max(noise / meas)),
      "resolved_fraction": float(np.mean([r["resolved"] for r in rows])),
      "median_rounds": float(np.median([r["rounds"] for r in rows])),
      "uniform_signed_rel_error": [
          round((r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"], 5) for r in uniform],
      "uniform_multipliers": [round(r["multiplier"], 3) for r in uniform],
      "spearman_random_only": spearman(pred[rnd], meas[rnd]) if len(rnd) > 1 else float("nan"),
      "random_only_range_ratio": (float(meas[rnd].max() / meas[rnd].min()) if rnd
                                  else float("nan")),
  }


def validate(cfg, table_path: str, n: int = 30, seed: int = 1, plot: str | None = None,
             progress: bool = True, models_dir: str | None = None,
             convert_only: bool = False, fmt: str | None = None,
             min_rounds: int = MIN_ROUNDS, max_rounds: int = MAX_ROUNDS,
             noise_floor: float = NOISE_FLOOR) -> dict:
  """Measures `n` children spanning the latency range against the table.

  Args:
    cfg: the config whose network the table is for.
    table_path: the table file.
    n: how many children.
    seed: seed of the random children.
    plot: scatter PNG to write (None: none).
    progress: console progress bars.
    models_dir: cache of the converted children (a rerun reuses them).
    convert_only: only convert the children into `models_dir` in format
      `fmt` (no table needed yet), to time them later.
    fmt: the format of `convert_only`.
    min_rounds, max_rounds, noise_floor: see `time_children`.

  Returns:
    `summarise`'s statistics with the table, model, format, threads, n and
    one row per child (`decisions`, `kind`, `multiplier`, `predicted_ms`,
    `measured_ms`, `noise_ms`, `rounds`, `resolved`).
  """
  t = build_lib.topology_of_config(cfg)
  if convert_only:
    measure.export_format(fmt)
    fp = {"format": fmt}
  else:
    tab = table_lib.load(table_path, t)
    fp = tab["fingerprint"]
    table_lib.check_fingerprint(tab, measure.fingerprint(fp["format"], fp["threads"]),
                                table_path)
  if models_dir:
    fileio.makedirs(models_dir)
  children = sample_children(t.space, n, seed)
  contents = []
  bar = build_lib.progress_bar(len(children), 0, "convert", progress)
  for c in children:
    path = None
    if models_dir:
      path = os.path.join(models_dir,
                          f"{fp['format']}_{build_lib.arch_key(c['decisions'])}.tflite")
    contents.append(_content(t, t.space.widths(c["decisions"]), fp["format"], path))
    if bar is not None:
      bar.update(1)
  if bar is not None:
    bar.close()
  if convert_only:
    return {"n": len(children), "models_dir": models_dir}
  timers = [measure.child_timer(content, t.input_shape, fp["threads"], tab["runs"],
                                tab["warmup"]) for content in contents]
  bar = build_lib.progress_bar(len(children) * max_rounds, 0, "time", progress)
  timed = time_children(timers, min_rounds, max_rounds, noise_floor,
                        progress=None if bar is None else bar.update)
  if bar is not None:
    bar.close()
  rows = [dict(c, predicted_ms=table_lib.predict(t, tab, t.space.widths(c["decisions"])), **m)
          for c, m in zip(children, timed)]
  result = {"table": table_path, "model": t.model, "input_shape": list(t.input_shape),
            "format": fp["format"], "threads": fp["threads"], "runs": tab["runs"],
            "n": len(rows), **summarise(rows), "rows": rows}
  if plot:
    _scatter(rows, result, plot)
    result["plot"] = plot
  return result


def _scatter(rows, result, path) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(4.8, 4.5))
  for kind, marker in (("uniform", "s"), ("random", "o")):
    sel = [r for r in rows if r.get("kind") == kind]
    if sel:
      ax.errorbar([r["measured_ms"] for r in sel], [r["predicted_ms"] for r in sel],
                  xerr=[r["noise_ms"] for r in sel], fmt=marker, ms=4, lw=0.8,
                  label=f"{kind} ({len(sel)})")
  meas = np.array([r["measured_ms"] for r in rows])
  pred = np.array([r["predicted_ms"] for r in rows])
  lo, hi = min(meas.min(), pred.min()), max(meas.max(), pred.max())
  ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
  ax.set_xlabel("measured latency (ms; bars: its noise)")
  ax.set_ylabel("table prediction (ms)")
  ax.legend(fontsize=8, loc="upper left")
  ax.set_title(f"{result['model']} {tuple(result['input_shape'])} {result['format']}\n"
               f"Spearman {result['spearman']:.3f}, Kendall {result['kendall_tau']:.3f}, "
               f"median rel. err. {100 * result['median_rel_error']:.1f}%", fontsize=9)
  fig.tight_layout()
  fileio.save_figure(fig, path, dpi=120)
  plt.close(fig)
  logging.info("wrote %s", path)
