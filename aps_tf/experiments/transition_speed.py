r"""How fast one side anneals under the 'exact' step, by its shape and initial noise.

The exact step's pull between two columns depends on their angle alone, but
the transition starts from ordinal sharing plus noise: how soon the columns
separate depends on how far the noise puts them apart (the noise std times
the square root of the meta rows, per column) and on how many columns share
the meta rows (a side with more columns than rows cannot become independent).
For each case this replays one side, alone, over `--tau_steps` units of
tau x transition steps (the step's time: ResNet-18's search phase at its
default tau is 1.8e-3 x 5,008 = 9.0) with the configured weight and momentum
(base config: 5e-3, 0.9), and reports S(t)/S(0) and when it reaches 0.9 and 0.8.

  python -m aps_tf.experiments.transition_speed [--json]
"""

from __future__ import annotations

import json

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from aps_tf import anneal
from aps_tf import sharing

# (candidates, meta rows, noise std): the columns/rows ratio at fixed noise,
# the noise at ResNet-18's first-stage shape (1.75 columns per row, as every
# ImageNet side), and the width at 1.75 columns per row.
CASES = tuple(((32, 48, 64, 80), m, 1e-2) for m in (96, 128, 160, 224, 448)) + (
    ((32, 48, 64, 80), 128, 1e-3), ((32, 48, 64, 80), 128, 3e-2),
    ((16, 24, 32, 40), 64, 1e-2), ((64, 96, 128, 160), 256, 1e-2),
    ((64, 96, 128, 160), 256, 1e-3))


def measure(candidates, meta: int, noise: float, tau_steps: float = 18.0, num: int = 300,
            weight: float = 5e-3, momentum: float = 0.9, seed: int = 0) -> dict:
  """S(t)/S(0) of one side under the 'exact' step (the ODE in tau x steps).

  Returns:
    A flat dict: the side's shape, the tau x steps at which S/S(0) reaches 0.9
    and 0.8 (None: not within `tau_steps`), and S/S(0) at 4.5, 9 and `tau_steps`.
  """
  init = sharing.init_projection("transitional", candidates, meta, noise_std=noise, seed=seed)
  mask = tf.constant(sharing.column_mask(candidates))
  k = tau_steps / num
  sums = anneal.replay([(init, mask, candidates)], "exact", num, lr=k / (1.0 - momentum),
                       weight=weight)[:, 0]
  ratio, u = sums / sums[0], np.arange(num + 1) * k

  def first(level):
    hit = np.nonzero(ratio <= level)[0]
    return None if not len(hit) else round(float(u[hit[0]]), 3)

  return {"candidates": "/".join(map(str, candidates)), "columns": int(sum(candidates)),
          "meta_rows": int(meta), "columns_per_row": round(sum(candidates) / meta, 3),
          "noise_std": noise, "tau_steps_to_0.9": first(0.9), "tau_steps_to_0.8": first(0.8),
          "S_ratio_at_4.5": round(float(np.interp(4.5, u, ratio)), 4),
          "S_ratio_at_9": round(float(np.interp(9.0, u, ratio)), 4),
          f"S_ratio_at_{tau_steps:g}": round(float(ratio[-1]), 4)}


def main(argv):
  del argv
  for case in CASES:
    row = measure(*case, tau_steps=flags.FLAGS.tau_steps)
    print(json.dumps(row) if flags.FLAGS.json else
          "  ".join(f"{k}={v}" for k, v in row.items()), flush=True)


if __name__ == "__main__":
  flags.DEFINE_bool("json", False, "One JSON object per case per line.")
  flags.DEFINE_float("tau_steps", 18.0, "Length of the replay in tau x transition steps.")
  app.run(main)
