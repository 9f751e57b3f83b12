r"""Search-step timings on ResNet-20, candidates {4,8,16,32,64}, M=124, batch 128.

CIFAR-shaped random data (32x32x3, 10 classes); nothing is read from disk.
Prints one JSON object (with --json) holding:
  warmup_iter_s         median warm-up iteration (uniform sample + supernet step)
  search_iter_s         median search iteration (controller sample + reward step with
                        REINFORCE update + fresh sample + supernet step + Phi step)
  supernet_vs_dense_ratio  supernet train step at one fixed sampled architecture over
                        the dense child (aps_tf.models.dense.build) of the same widths,
                        same optimiser (SGD momentum) and L2 on conv/dense kernels;
                        medians of interleaved runs (goal <= 1.1)
  phi_share             Phi step time / search iteration time (goal <= 0.05)
  traces                train-step traces over 50 different architectures (must be 1)
plus the sharing mode, the per-part medians and the load average.

  python benchmarks/search_step.py --json [--sharing=transitional] [--iters=10]
"""

import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top
import keras
import numpy as np
import tensorflow as tf

from aps_tf import cli
from aps_tf import data
from aps_tf.models import dense
from aps_tf.search import loop
from configs import base

_JSON = flags.DEFINE_bool("json", False, "Print one JSON object only.")
_SHARING = flags.DEFINE_enum("sharing", "transitional", ["ordinal", "independent", "transitional"],
                             "Sharing mode.")
_ITERS = flags.DEFINE_integer("iters", 10, "Timed iterations per measurement.")
_TRACE_ARCHS = flags.DEFINE_integer("trace_archs", 50, "Architectures for the trace count.")


def _config(sharing):
  c = base.get_config("cifar10")
  c.model.name = "resnet20"
  c.model.candidates = (4, 8, 16, 32, 64)
  c.model.meta_width = 124 if sharing != "independent" else None
  c.search.sharing = sharing
  c.search.batch_size = 128
  c.search.steps_per_epoch = 100
  c.search.reward.target = 2.05e7
  return c


def _median(f, n):
  f()
  ts = []
  for _ in range(n):
    t = time.perf_counter()
    f()
    ts.append(time.perf_counter() - t)
  return float(np.median(ts))


def main(argv):
  del argv
  load_before = os.getloadavg()
  cfg = _config(_SHARING.value)
  info = data.DatasetInfo(name="cifar10", image_shape=(32, 32, 3), num_classes=10,
                          split_sizes={"train": 25000, "reward": 25000, "full_train": 50000,
                                       "test": 10000},
                          mean=(125.3, 123.0, 113.9), std=(63.0, 62.1, 66.7))
  sr = loop.Searcher(cfg, info=info)
  rng = np.random.default_rng(0)
  images = tf.constant(rng.normal(size=(128, 32, 32, 3)).astype(np.float32))
  labels = tf.constant(rng.integers(0, 10, 128).astype(np.int32))
  batch = (images, labels)
  n = _ITERS.value
  res = {"sharing": cfg.search.sharing, "model": "resnet20", "candidates": [4, 8, 16, 32, 64],
         "meta_width": cfg.model.meta_width, "batch_size": 128, "iters": n}

  # Trace count over many architectures (also warms everything up).
  for i in range(_TRACE_ARCHS.value):
    sr.supernet_step(tf.constant(sr.train_archs(i)), batch)["loss"].numpy()
  res["traces"] = sr.train_traces

  step = [0]

  def warmup_iter():
    step[0] += 1
    sr.supernet_step(tf.constant(sr.train_archs(step[0])), batch)["loss"].numpy()

  res["warmup_iter_s"] = _median(warmup_iter, n)

  sr.warmup_steps = 0  # sample from the controller from now on
  parts = {"reward": [], "train": [], "phi": []}

  def search_iter():
    step[0] += 1
    t0 = time.perf_counter()
    arch = sr.controller_arch(step[0])
    sr.reward_step(tf.constant(arch), batch)["reward"].numpy()
    t1 = time.perf_counter()
    sr.supernet_step(tf.constant(sr.train_archs(step[0])), batch)["loss"].numpy()
    t2 = time.perf_counter()
    if cfg.search.sharing == "transitional":
      sr.phi_step().numpy()
    t3 = time.perf_counter()
    parts["reward"].append(t1 - t0)
    parts["train"].append(t2 - t1)
    parts["phi"].append(t3 - t2)

  res["search_iter_s"] = _median(search_iter, n)
  med = {k: float(np.median(v[1:])) for k, v in parts.items()}
  res["reward_step_s"], res["train_step_s"], res["phi_step_s"] = (
      med["reward"], med["train"], med["phi"])
  res["phi_share"] = med["phi"] / res["search_iter_s"]

  # Supernet vs dense child at one fixed sampled architecture.
  arch = np.array(sr.space.sample_uniform(np.random.default_rng(1)), np.int32)
  widths = sr.space.widths(arch)
  model = dense.build(sr.topology, widths)
  opt = keras.optimizers.SGD(learning_rate=0.1, momentum=0.9)
  opt.build(model.trainable_variables)
  wd = cfg.search.weight_decay
  decay = [("kernel" in v.path) for v in model.trainable_variables]

  @tf.function
  def dense_step(x, y):
    with tf.GradientTape() as tape:
      logits = model(x, training=True)
      loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits,
                                                                         from_logits=True))
    grads = tape.gradient(loss, model.trainable_variables)
    grads = [g + wd * v if d else g for g, v, d in zip(grads, model.trainable_variables, decay)]
    opt.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  fixed = tf.constant(arch[None])
  sup = lambda: sr.supernet_step(fixed, batch)["loss"].numpy()
  den = lambda: dense_step(images, labels).numpy()
  sup(), den()
  ts, td = [], []
  for _ in range(2 * n):  # interleaved, so load changes hit both
    t = time.perf_counter(); sup(); ts.append(time.perf_counter() - t)
    t = time.perf_counter(); den(); td.append(time.perf_counter() - t)
  res["supernet_fixed_step_s"] = float(np.median(ts))
  res["dense_step_s"] = float(np.median(td))
  res["supernet_vs_dense_ratio"] = res["supernet_fixed_step_s"] / res["dense_step_s"]
  res["fixed_arch_widths"] = widths
  res["traces_after"] = sr.train_traces
  res["reward_traces"] = sr.reward_traces
  res["loadavg_before"] = [round(x, 2) for x in load_before]
  res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
  res["cpus"] = os.cpu_count()
  res["tf_threads"] = [tf.config.threading.get_inter_op_parallelism_threads(),
                       tf.config.threading.get_intra_op_parallelism_threads()]
  if _JSON.value:
    print(json.dumps(res))
  else:
    for k, v in res.items():
      print(f"{k:28s} {v}")


if __name__ == "__main__":
  cli.run(main)
