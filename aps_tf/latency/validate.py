"""End-to-end check of a latency table against whole-model measurements.

N random dense children of the table's search space (uniform per decision,
seeded) are converted whole, with the exporter's converter settings, and
timed under the table's own settings (format, threads, runs). The table's
prediction is compared with each measurement: Spearman rank correlation,
median and max relative error |pred - meas| / meas, and a scatter plot.
Only tables measured on this machine can be checked here (the fingerprint
must match).
"""

from __future__ import annotations

import os

from absl import logging
import numpy as np

from aps_tf import fileio
from aps_tf.latency import build as build_lib
from aps_tf.latency import measure
from aps_tf.latency import table as table_lib
from aps_tf.models import dense


def _content(t, widths, fmt: str, path: str | None) -> bytes:
  """The converted child, cached at `path` (conversion dominates the time)."""
  if path and fileio.exists(path):
    return fileio.read_bytes(path)
  content = measure.convert(dense.build(t, widths), fmt)
  if path:
    fileio.write_bytes(path, content)
  return content


def validate(cfg, table_path: str, n: int = 30, seed: int = 1, plot: str | None = None,
             progress: bool = True, models_dir: str | None = None,
             convert_only: bool = False, fmt: str | None = None) -> dict:
  """Measures `n` random children; `models_dir` caches their converted files
  (`convert_only`: just write them in format `fmt`, needing no table yet, to
  time them later when the machine is quiet)."""
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
  rng = np.random.default_rng(seed)
  rows = []
  bar = build_lib._progress(n, 0, "validate", progress)  # pylint: disable=protected-access
  for _ in range(n):
    arch = t.space.sample_uniform(rng)
    widths = t.space.widths(arch)
    path = None
    if models_dir:
      path = os.path.join(models_dir, f"{fp['format']}_{build_lib._arch_key(arch)}.tflite")  # pylint: disable=protected-access
    content = _content(t, widths, fp["format"], path)
    if bar is not None:
      bar.update(1)
    if convert_only:
      continue
    measured = measure.time_content(content, t.input_shape, fp["threads"], tab["runs"],
                                    tab["warmup"])
    rows.append({"decisions": arch, "predicted_ms": table_lib.predict(t, tab, widths),
                 "measured_ms": measured})
  if bar is not None:
    bar.close()
  if convert_only:
    return {"n": int(n), "models_dir": models_dir}
  pred = np.array([r["predicted_ms"] for r in rows])
  meas = np.array([r["measured_ms"] for r in rows])
  rel = np.abs(pred - meas) / meas
  rho = spearman(pred, meas)
  result = {"table": table_path, "model": t.model, "input_shape": list(t.input_shape),
            "format": fp["format"], "threads": fp["threads"], "n": int(n),
            "spearman": rho, "median_rel_error": float(np.median(rel)),
            "max_rel_error": float(np.max(rel)),
            "mean_measured_ms": float(meas.mean()), "mean_predicted_ms": float(pred.mean()),
            "rows": rows}
  if plot:
    _scatter(pred, meas, result, plot)
    result["plot"] = plot
  return result


def spearman(x, y) -> float:
  """Rank correlation (timings are continuous: ties are not averaged)."""
  if len(x) < 2:
    return float("nan")
  rx, ry = (np.argsort(np.argsort(v)).astype(np.float64) for v in (x, y))
  return float(np.corrcoef(rx, ry)[0, 1])


def _scatter(pred, meas, result, path) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  ax.scatter(meas, pred, s=14)
  lo, hi = min(meas.min(), pred.min()), max(meas.max(), pred.max())
  ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
  ax.set_xlabel("measured latency (ms)")
  ax.set_ylabel("table prediction (ms)")
  ax.set_title(f"{result['model']} {tuple(result['input_shape'])} {result['format']}\n"
               f"Spearman {result['spearman']:.3f}, median rel. err. "
               f"{100 * result['median_rel_error']:.1f}%", fontsize=9)
  fig.tight_layout()
  fileio.save_figure(fig, path, dpi=120)
  plt.close(fig)
  logging.info("wrote %s", path)
