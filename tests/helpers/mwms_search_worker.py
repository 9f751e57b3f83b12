"""One worker of a two-process MultiWorkerMirroredStrategy search (TF_CONFIG set).

  python -m tests.helpers.mwms_search_worker WORKDIR OUT.npy [STEPS]

Trains the tiny search (to STEPS, default the end), saves the flattened
checkpoint variables to OUT.npy and prints "steps N TRACES".
"""

import sys

import numpy as np
import tensorflow as tf

from tests.helpers.tiny_distributed import tiny


def main(argv) -> None:
  strategy = tf.distribute.MultiWorkerMirroredStrategy()
  from aps_tf.search import run  # pylint: disable=g-import-not-at-top
  cfg = tiny("transitional")
  cfg.strategy = "multi_worker"
  r = run.SearchRun(cfg, argv[1], strategy=strategy, progress=False)
  r.train(stop_at=int(argv[3]) if len(argv) > 3 else None)
  vals = [np.asarray(v.numpy()).ravel().astype(np.float64)
          for v in r.searcher.checkpoint_variables()]
  np.save(argv[2], np.concatenate(vals))
  print("steps", int(r.searcher.step.numpy()), r.searcher.train_traces)


if __name__ == "__main__":
  main(sys.argv)
