"""Search analysis: a metrics log (JSON lines), TensorBoard scalars, PNG plots.

`MetricsLog` appends one JSON object per record to WORKDIR/metrics.jsonl and
mirrors it to TensorBoard (WORKDIR/tb): scalars, decision-probability images,
hyperparameters (HParams plugin). On resume it drops records
newer than the restored step, so a killed-and-resumed run has one history.
`plot(workdir)` renders WORKDIR/plots/*.png (matplotlib Agg): train and reward
accuracy, Phi total and per layer, gradient cosine and coupled-gradient norm,
layer-wise decision probabilities over time (paper Fig. 5), cost of sampled
architectures, controller entropy.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import tensorflow as tf

from aps_tf import config_check
from aps_tf import fileio


# Config fields shown as hyperparameters in TensorBoard's HParams dashboard,
# so searches of different sharing modes (or settings) compare in one table.
HPARAM_FIELDS = (
    "search.sharing", "search.phi_objective", "search.phi_lr", "search.phi_weight",
    "search.static_shapes", "search.lr", "search.batch_size", "search.epochs",
    "search.warmup_epochs", "search.reward.target", "search.reward.bn", "model.name",
    "model.candidates", "model.space", "data.name", "seed")
# Pixels per (layer, candidate) cell of the decision-probability image.
_CELL = 8


def hparams(config: dict) -> dict[str, Any]:
  """The HPARAM_FIELDS of a resolved config (a JSON dict) as HParams values
  (bool, int, float or str; lists and None as their text)."""
  flat = config_check.flatten(config)
  out = {}
  for key in HPARAM_FIELDS:
    if key in flat:
      v = flat[key]
      out[key] = v if isinstance(v, (bool, int, float, str)) else str(v)
  return out


def probability_image(probabilities) -> np.ndarray:
  """[1, layers*cell, candidates*cell, 1] float image of decision probabilities
  (one row per decision, one column per candidate, smallest first; white = 1)."""
  p = np.clip(np.asarray(probabilities, np.float32), 0.0, 1.0)
  return np.kron(p, np.ones((_CELL, _CELL), np.float32))[None, :, :, None]


class MetricsLog:
  """metrics.jsonl plus TensorBoard summaries (tf.summary) in WORKDIR/tb:
  every numeric field as a scalar, Phi per layer, the decision probabilities
  as an image, and (given `hparams`) the run's hyperparameters for the
  HParams dashboard. Any filesystem (aps_tf.fileio)."""

  def __init__(self, workdir: str, resume_step: int, enabled: bool = True,
               hparams: dict[str, Any] | None = None):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._writer = None
    if not enabled:
      return
    kept = []
    if fileio.exists(self.path):
      for line in fileio.read_text(self.path).splitlines(keepends=True):
        try:
          rec = json.loads(line)
        except json.JSONDecodeError:
          continue  # a line cut by a kill
        if rec.get("step", 0) <= resume_step:
          kept.append(line if line.endswith("\n") else line + "\n")
    fileio.write_text(self.path, "".join(kept))
    self._file = tf.io.gfile.GFile(self.path, "a")
    self._writer = tf.summary.create_file_writer(os.path.join(workdir, "tb"))
    if hparams:
      from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
      with self._writer.as_default(step=int(resume_step)):
        hp.hparams(hparams, trial_id=os.path.basename(str(workdir).rstrip("/")) or None)

  def write(self, record: dict[str, Any]) -> None:
    if not self.enabled:
      return
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    with self._writer.as_default(step=int(record["step"])):
      for k, v in record.items():
        if k == "step":
          continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
          tf.summary.scalar(f"{record.get('kind', 'train')}/{k}", float(v))
        elif k == "phi_per_layer":
          for name, val in v.items():
            tf.summary.scalar(f"phi/{name}", float(val))
        elif k == "probabilities" and v:
          tf.summary.image("decision_probabilities", probability_image(v),
                           description="rows: decisions (layers); columns: candidates, "
                           "smallest first; brightness: probability")

  def close(self):
    if self.enabled:
      self._file.close()
      self._writer.flush()


def read(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  out = []
  if fileio.exists(path):
    for line in fileio.read_text(path).splitlines():
      try:
        out.append(json.loads(line))
      except json.JSONDecodeError:
        pass
  return out


def plot(workdir: str) -> list[str]:
  """Writes the analysis PNGs; returns their paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  recs = read(workdir)
  train = [r for r in recs if r.get("kind") == "train"]
  ana = [r for r in recs if r.get("kind") == "analysis"]
  out_dir = os.path.join(workdir, "plots")
  fileio.makedirs(out_dir)
  paths = []

  def series(rs, key):
    pts = [(r["step"], r[key]) for r in rs if r.get(key) is not None]
    return ([p[0] for p in pts], [p[1] for p in pts])

  def save(fig, name):
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fileio.save_figure(fig, path, dpi=80)
    plt.close(fig)
    paths.append(path)

  fig, ax = plt.subplots(1, 3, figsize=(13, 3.5))
  for key, label in (("accuracy", "train"), ("reward_accuracy", "reward split")):
    ax[0].plot(*series(train, key), label=label)
  ax[0].set_title("accuracy of sampled architectures"); ax[0].legend(); ax[0].set_xlabel("step")
  ax[1].plot(*series(train, "cost"), ".", ms=3)
  ax[1].set_title("cost of sampled architectures"); ax[1].set_xlabel("step")
  ax[2].plot(*series(train, "entropy"))
  ax[2].set_title("controller entropy"); ax[2].set_xlabel("step")
  save(fig, "training.png")

  fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
  ax[0].plot(*series(ana, "phi"))
  ax[0].set_title("sharing level Phi (total)"); ax[0].set_yscale("log"); ax[0].set_xlabel("step")
  per = [r for r in ana if r.get("phi_per_layer")]
  if per:
    names = list(per[0]["phi_per_layer"])
    steps = [r["step"] for r in per]
    for n in names:
      ax[1].plot(steps, [max(r["phi_per_layer"][n], 1e-12) for r in per], lw=0.8)
    ax[1].set_yscale("log")
  ax[1].set_title("Phi per layer"); ax[1].set_xlabel("step")
  save(fig, "phi.png")

  fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
  ax[0].plot(*series(ana, "grad_cosine"), "o-")
  ax[0].set_title("mean gradient cosine (Eq. 3)"); ax[0].set_xlabel("step")
  ax[1].plot(*series(ana, "coupled_grad_norm"), "o-")
  ax[1].set_title("coupled-gradient norm"); ax[1].set_xlabel("step")
  save(fig, "gradients.png")

  prob = [r for r in ana if r.get("probabilities")]
  if prob:
    p = np.array([r["probabilities"] for r in prob])  # [T, D, A]
    d_count, a_count = p.shape[1], p.shape[2]
    cols = min(d_count, 6)
    rows = int(np.ceil(d_count / cols))
    fig, axs = plt.subplots(rows, cols, figsize=(2.2 * cols, 1.8 * rows), squeeze=False)
    steps = [r["step"] for r in prob]
    for d in range(rows * cols):
      a = axs[d // cols][d % cols]
      if d >= d_count:
        a.axis("off")
        continue
      a.stackplot(steps, p[:, d, :].T)
      a.set_title(f"layer {d}", fontsize=8)
      a.set_ylim(0, 1)
      a.tick_params(labelsize=6)
    fig.suptitle(f"decision probabilities over time ({a_count} candidates, bottom = smallest)",
                 fontsize=9)
    save(fig, "decision_probabilities.png")
  return paths
