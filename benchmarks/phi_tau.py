r"""Phi under Eq. 4 / Eq. 5 taken literally, for two step sizes tau.

ResNet-20, candidates {4,8,16,32,64}, M=124, APS-T projections (noise 1e-3,
seed 0), no training: Phi depends on P/Q alone. Prints the ordinal and
independent values and Phi / ordinal after the given numbers of steps.

  python benchmarks/phi_tau.py
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # pylint: disable=g-import-not-at-top

from aps_tf.models import supernet  # pylint: disable=g-import-not-at-top
from aps_tf.models import topology  # pylint: disable=g-import-not-at-top

CHECKPOINTS = (0, 5, 25, 50, 100, 150)


def _net(t, mode, **kwargs):
  net = supernet.Supernet(t, sharing_mode=mode, **kwargs)
  net(tf.zeros([1, *t.input_shape]), tf.zeros([t.space.num_decisions], tf.int32))
  return net


def main():
  t = topology.build_topology("resnet20", (32, 32, 3), 10)
  ordinal = float(_net(t, "ordinal").phi())
  independent = float(_net(t, "independent").phi())
  print(f"Phi ordinal {ordinal:.6g}, independent {independent:.6g} "
        f"({independent / ordinal:.3f} of ordinal)")
  for tau, steps in ((1e-3, 5), (1e-4, 150)):
    net = _net(t, "transitional", noise_std=1e-3, seed=0)
    step = tf.function(lambda: net.phi_step(tau))  # pylint: disable=cell-var-from-loop
    values = [float(step()) for _ in range(steps)] + [float(net.phi())]
    print(f"tau={tau:g}: Phi / ordinal after " + ", ".join(
        f"{i} steps {values[i] / ordinal:.3f}" for i in CHECKPOINTS if i < len(values)))


if __name__ == "__main__":
  main()
