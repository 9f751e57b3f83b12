r"""Draws the APS figure of README.md: how the three sharing modes cut candidates.

For one layer with candidates {2, 4, 6} and meta width 12, each panel shows
the Gram matrix of the concatenated projections [P^1 | P^2 | P^3] (which
meta-weight rows each candidate's columns read, and how much they overlap):
ordinal (nested: maximal Phi), independent (disjoint: minimal Phi) and
transitional after the projected Phi descent of Eq. 5 (starts ordinal).

  python -m aps_tf.experiments.figure --out=docs/aps_sharing.png
"""


from absl import app
from absl import flags
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
import tensorflow as tf

from aps_tf import cli
from aps_tf import fileio
from aps_tf import sharing
from aps_tf import workdir

flags.DEFINE_string("out", "docs/aps_sharing.png", "Output PNG.")
flags.DEFINE_integer("steps", 400, "Projected Phi steps for the transitional panel.")
FLAGS = flags.FLAGS

CANDIDATES = (2, 4, 6)
META = 12


def anneal(steps: int, lr: float = 2e-2) -> tuple[np.ndarray, list[float]]:
  """Runs Eq. 5 on one side's projections; returns them and S per step."""
  p = tf.Variable(sharing.init_projection("transitional", CANDIDATES, META, 1e-2, seed=0))
  mask = tf.constant(sharing.column_mask(CANDIDATES))
  history = []
  for _ in range(steps):
    with tf.GradientTape() as tape:
      s = sharing.sharing_sum(p)
    p.assign(sharing.projected_step(p, tape.gradient(s, p), mask, lr))
    history.append(float(s))
  return p.numpy(), history


def gram(stack: np.ndarray) -> np.ndarray:
  cols = [stack[a, :, :c] for a, c in enumerate(CANDIDATES)]
  cat = np.concatenate(cols, axis=1)
  return np.abs(cat.T @ cat)


def draw(out: str, steps: int) -> None:
  ordinal = sharing.init_projection("ordinal", CANDIDATES, META)
  independent = sharing.init_projection("independent", CANDIDATES, META)
  transitional, history = anneal(steps)
  fig, axes = plt.subplots(1, 4, figsize=(16, 4))
  panels = [("APS-O (ordinal)", ordinal), ("APS-I (independent)", independent),
            (f"APS-T after {steps} Phi steps", transitional)]
  edges = np.cumsum(CANDIDATES)[:-1] - 0.5
  for ax, (title, stack) in zip(axes, panels):
    s = float(sharing.sharing_sum(stack))
    ax.imshow(gram(stack), cmap="viridis", vmin=0, vmax=1)
    for e in edges:
      ax.axhline(e, color="w", lw=1)
      ax.axvline(e, color="w", lw=1)
    ax.set_title(f"{title}\nS = {s:.1f}")
    ax.set_xticks([])
    ax.set_yticks([])
  axes[3].plot(history)
  axes[3].axhline(float(sharing.sharing_sum(independent)), ls="--", c="k", label="independent")
  axes[3].axhline(float(sharing.sharing_sum(ordinal)), ls=":", c="k", label="ordinal")
  axes[3].set_xlabel("projected step (Eq. 5)")
  axes[3].set_ylabel("S_P = sum ||P_a^T P_b||_F^2")
  axes[3].legend()
  fig.suptitle("|[P^1|P^2|P^3]^T [P^1|P^2|P^3]| for candidates {2,4,6}, meta width 12: "
               "overlap between candidate kernels")
  fig.tight_layout()
  fileio.save_figure(fig, out, dpi=90)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if FLAGS.steps < 1:
    raise app.UsageError(f"--steps: expected a positive integer, got {FLAGS.steps}")
  if not FLAGS.out.lower().endswith(".png"):
    raise app.UsageError(f"--out: expected a .png path, got {FLAGS.out!r}")
  workdir.ensure_writable(fileio.dirname(FLAGS.out))
  draw(FLAGS.out, FLAGS.steps)
  print(FLAGS.out)


if __name__ == "__main__":
  cli.run(main)
