"""Search analysis plots from metrics.jsonl (written by `aps_tf.runner.MetricsLog`).

`plot(workdir)` renders WORKDIR/plots/*.png (matplotlib Agg): train and reward
accuracy, Phi total and per layer, gradient cosine and coupled-gradient norm,
layer-wise decision probabilities over time (paper Fig. 5), cost of sampled
architectures, controller entropy.
"""

from __future__ import annotations

import os

import numpy as np

from aps_tf import fileio
from aps_tf import runner


def plot(workdir: str) -> list[str]:
  """Writes the analysis PNGs; returns their paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  recs = runner.read_metrics(workdir)
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
