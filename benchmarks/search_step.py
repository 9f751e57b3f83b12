r"""Search-step benchmark at a fixed, seeded list of architectures.

ResNet-20, candidates {4,8,16,32,64}, M=124, batch 128 by default; CIFAR-shaped
random data (nothing is read from disk). Every figure is at known widths: the
`--num_archs` architectures (uniform samples of `--seed`) are written to
`--archs_file` with their widths and FLOPs (an existing file is read instead,
so other tools can time the same list). Comparisons are like for like: both
sides of a ratio run the same architectures, alternated in one process, and
medians are taken.

The JSON (`--json`: the last line of stdout) holds, among others:
  traces                   supernet-step traces over `--trace_archs` architectures (must be 1)
  supernet_vs_dense_ratio  sum over the archs of the supernet step over the dense child
                           step (aps_tf.models.dense.build, same SGD momentum and L2)
  supernet_vs_dense_max    the largest per-architecture ratio
  reward_step_s, supernet_step_s, dense_step_s, phi_step_s   medians over the archs
  search_iter_s            search iteration (controller sample + reward step + fresh
                           sample + supernet step + Phi step) in the search's traced
                           loop, `--loop_steps` (50) iterations per call
  host_overhead            1 - (reward + supernet + Phi steps, called separately) /
                           search_iter_s, over the same iterations 1..`--loop_steps`
                           (the same architectures: the benchmark's controller takes
                           its step at learning rate 0, so its policy stays put);
                           host_overhead_spl1 is the same with one iteration per call
  phi_share                Phi step / search_iter_s
  static_step_s, xla_step_s, dynamic_step_s   the supernet step on the static-shape
                           path, the same under XLA, the dynamic path (first
                           `--static_archs` archs)
  xla_compile_s            the XLA step's first call (trace + compile + one step)
  xla_step_vs_static       xla_step_s / static_step_s
  dense_xla_vs_dense       the dense child's step under XLA over the same without, at
                           the same archs: XLA's own kernels on this device
  widest_dense_xla_vs_dense  the same for the dense child at the largest candidate
                           everywhere (the convolutions of the static path)
  candidates_iter_s        {A: search iteration at A candidates}, every width half the
                           largest candidate and one meta width for every A (only the
                           candidate count grows; transitional, Phi step included):
                           the sum of the parts' medians, alternated over all counts;
                           candidates_parts_s holds [reward, supernet, Phi] per A

  python benchmarks/search_step.py --json [--iters=5] [--num_archs=20]
"""

import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top
import keras
import numpy as np
import tensorflow as tf

from aps_tf import cli
from aps_tf import data
from aps_tf import errors
from aps_tf import flops as flops_lib
from aps_tf import runner
from aps_tf.models import dense
from aps_tf.search import task as task_lib
from configs import base

_JSON = flags.DEFINE_bool("json", False, "End with one JSON line only.")
_SHARING = flags.DEFINE_enum("sharing", "transitional", ["ordinal", "independent", "transitional"],
                             "Sharing mode.")
_MODEL = flags.DEFINE_string("model", "resnet20", "Model family (aps_tf.models.topology).")
_CANDIDATES = flags.DEFINE_list("candidates", ["4", "8", "16", "32", "64"], "Candidate widths.")
_META = flags.DEFINE_integer("meta_width", 124, "Meta width (0: the sum of candidates).")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Global batch size.")
_IMAGE = flags.DEFINE_integer("image_size", 32, "Square input size (3 channels, 10 classes).")
_ITERS = flags.DEFINE_integer("iters", 5, "Timed repetitions per measurement (medians).")
_NUM_ARCHS = flags.DEFINE_integer("num_archs", 20, "Fixed architectures timed.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the architecture list and the data.")
_ARCHS_FILE = flags.DEFINE_string("archs_file", None,
                                  "JSON of the fixed architectures (read if it exists, else "
                                  "written); default <workdir>/search_step_archs.json.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the archs file goes (default: a temp dir).")
_TRACE_ARCHS = flags.DEFINE_integer("trace_archs", 50, "Architectures for the trace count.")
_STATIC_ARCHS = flags.DEFINE_integer("static_archs", 3,
                                     "Fixed archs timed on the static and XLA paths (0: skip).")
_XLA = flags.DEFINE_bool("xla", True, "Also time the static path under XLA.")
_LOOP_STEPS = flags.DEFINE_integer("loop_steps", 50, "Iterations of the traced loop per call "
                                   "(its steps_per_loop) for the host overhead.")
_LOOP_ROUNDS = flags.DEFINE_integer("loop_rounds", 2, "Alternated rounds of the loop against "
                                    "its parts.")
_CANDIDATE_COUNTS = flags.DEFINE_list("candidate_counts", ["3", "5", "8"],
                                      "Candidate counts for the per-count iteration time "
                                      "(empty: skip).")


def _config(sharing, candidates, meta_width, static=False, jit=False):
  c = base.get_config("cifar10")
  c.model.name = _MODEL.value
  c.model.candidates = tuple(candidates)
  c.model.meta_width = meta_width or None
  c.search.sharing = sharing
  c.search.batch_size = _BATCH.value
  c.search.steps_per_epoch = 100
  c.search.static_shapes = static
  c.search.jit_compile = jit
  c.search.reward.target = 1e15  # above every architecture; the reward's value is not timed
  return c


def _info():
  s = _IMAGE.value
  return data.DatasetInfo(name="cifar10", image_shape=(s, s, 3), num_classes=10,
                          split_sizes={"train": 25000, "reward": 25000, "full_train": 50000,
                                       "test": 10000},
                          mean=(125.3, 123.0, 113.9), std=(63.0, 62.1, 66.7))


def _searcher(cfg):
  sr = task_lib.SearchTask.from_config(cfg, info=_info())
  sr.warmup_steps = 0  # the controller samples from the first iteration
  # The controller still takes its REINFORCE step (timed), but at learning rate
  # 0 its policy stays put, so iteration s samples the same architectures
  # however often it is timed: the loop and its parts compare like for like.
  sr.ctrl_opt.learning_rate = 0.0
  return sr


def _timed(f):
  t = time.perf_counter()
  f()
  return time.perf_counter() - t


def _alternate(fns: dict, n: int) -> dict:
  """Medians of `n` alternated calls of each function (one warm-up call each)."""
  for f in fns.values():
    f()
  ts = {k: [] for k in fns}
  for _ in range(n):
    for k, f in fns.items():
      ts[k].append(_timed(f))
  return {k: float(np.median(v)) for k, v in ts.items()}


def _fixed_archs(sr, path):
  """The fixed architecture list: read from `path`, or sampled and written there."""
  space = sr.space
  if tf.io.gfile.exists(path):
    with tf.io.gfile.GFile(path) as f:
      d = json.load(f)
    archs = [a["arch"] for a in d["archs"]]
    if len(archs) < _NUM_ARCHS.value or any(len(a) != space.num_decisions for a in archs):
      raise errors.UserError(f"{path}: expected >= {_NUM_ARCHS.value} architectures of "
                                 f"{space.num_decisions} decisions for this model")
    return [np.array(a, np.int32) for a in archs[:_NUM_ARCHS.value]]
  rng = np.random.default_rng(_SEED.value)
  archs = [np.array(space.sample_uniform(rng), np.int32) for _ in range(_NUM_ARCHS.value)]
  entries = []
  for a in archs:
    widths = space.widths(a)
    entries.append({"arch": a.tolist(), "widths": widths,
                    "flops": flops_lib.count(sr.topology, widths, "full")["flops"],
                    "flops_search": flops_lib.count(sr.topology, widths, "search")["flops"]})
  doc = {"model": _MODEL.value, "candidates": [int(c) for c in _CANDIDATES.value],
         "meta_width": sr.cfg.model.meta_width, "image_shape": list(sr.info.image_shape),
         "seed": _SEED.value, "archs": entries}
  tf.io.gfile.makedirs(os.path.dirname(path) or ".")
  with tf.io.gfile.GFile(path, "w") as f:
    json.dump(doc, f, indent=1)
  return archs


def _dense_step_fn(sr, widths, jit_compile=False):
  """The dense child's train step: same optimiser, loss and L2 as the supernet step."""
  model = dense.build(sr.topology, widths)
  s = sr.cfg.search
  opt = keras.optimizers.SGD(learning_rate=s.lr, momentum=s.momentum)
  opt.build(model.trainable_variables)
  wd = float(s.weight_decay)
  decay = [("kernel" in v.path) for v in model.trainable_variables]

  @tf.function(jit_compile=jit_compile)
  def step(x, y):
    with tf.GradientTape() as tape:
      logits = model(x, training=True)
      loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
          y, logits, from_logits=True)) / sr.global_batch
    grads = tape.gradient(loss, model.trainable_variables)
    grads = [g + wd * v if d else g for g, v, d in zip(grads, model.trainable_variables, decay)]
    opt.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  return step


def _iteration_parts(sr, batch, step):
  """(reward step, supernet step, Phi step) seconds of search iteration `step`.

  The same architectures the traced loop runs at `step` (controller sample,
  then a fresh sample for the supernet), through the separately traced steps;
  each part includes its own host sync.
  """
  arch = sr.policy_arch(step)
  t1 = time.perf_counter()
  sr.reward_step(tf.constant(arch), batch)["reward"].numpy()
  t2 = time.perf_counter()
  archs = sr.train_archs(step)
  t3 = time.perf_counter()
  sr.supernet_step(tf.constant(archs), batch)["loss"].numpy()
  t4 = time.perf_counter()
  if sr.cfg.search.sharing == "transitional":
    sr.phi_step().numpy()
  t5 = time.perf_counter()
  return t2 - t1, t4 - t3, t5 - t4


def _loop_runner(sr, batch, steps_per_loop: int) -> runner.Runner:
  """The search's traced loop (`runner.Runner`) over iterators repeating `batch`."""
  if sr._iterators is None:  # pylint: disable=protected-access
    ds = tf.data.Dataset.from_tensors(batch).repeat()
    sr._iterators = (iter(ds), iter(ds))  # pylint: disable=protected-access
  return runner.Runner(sr, tempfile.mkdtemp(), total_steps=10**9,
                       steps_per_loop=steps_per_loop, checkpoint_every=10**9, log_every=10**9)


def _loop_and_parts(sr, batch, loop_steps: int, rounds: int) -> dict:
  """The traced loop against its parts, like for like.

  The same `loop_steps` search iterations (steps 1..loop_steps, so the same
  architectures: the benchmark's controller does not learn) run three ways,
  alternated for `rounds` rounds, medians per iteration:
    parts  every iteration's reward, supernet and Phi steps called separately
    spl1   the traced loop, one iteration per call (one host sync each)
    spl50  the traced loop, all `loop_steps` iterations in one call
  """
  r = _loop_runner(sr, batch, loop_steps)  # one trace serves every loop length
  first = 1

  def parts():
    return [_iteration_parts(sr, batch, first + i) for i in range(loop_steps)]

  def loop(per_call):
    sr.step.assign(first)
    t = time.perf_counter()
    for _ in range(loop_steps // per_call):
      r.run_steps(per_call)
    return time.perf_counter() - t

  sr.step.assign(first)
  r.run_steps(1)  # the loop's one trace
  parts()  # warm
  ts = {"parts": [], "spl1": [], f"spl{loop_steps}": []}
  part_rows = []
  for _ in range(rounds):
    rows = parts()
    part_rows += rows
    ts["parts"].append(sum(sum(r) for r in rows))
    ts["spl1"].append(loop(1))
    ts[f"spl{loop_steps}"].append(loop(loop_steps))
  med = {k: float(np.median(v)) / loop_steps for k, v in ts.items()}
  reward, supernet, phi = (float(x) for x in np.median(np.array(part_rows), axis=0))
  return {"parts": med["parts"], "spl1": med["spl1"], "multi": med[f"spl{loop_steps}"],
          "reward": reward, "supernet": supernet, "phi": phi,
          "loop_traces": r.loop_traces}


def _candidate_sets(counts, cmax, meta):
  """Candidate sets of each count sharing the widths {cmax/4, cmax/2, cmax} and the meta width."""
  common = (cmax // 4, cmax // 2, cmax)
  pool = [int(round(cmax * f)) for f in (1 / 16, 1 / 8, 3 / 16, 3 / 8, 3 / 4)]
  pool = sorted({w for w in pool if w > 0} - set(common))
  out = {}
  for a in counts:
    if not 3 <= a <= 3 + len(pool):
      raise errors.UserError(f"--candidate_counts: expected counts in [3, {3 + len(pool)}] "
                             f"for a largest candidate of {cmax}, got {a}")
    out[a] = tuple(sorted(common + tuple(pool[:a - 3])))
    if meta and cmax > meta:
      raise errors.UserError(f"--meta_width={meta} is below the largest candidate {cmax}")
  return out


def _candidates_iter_s(batch, n):
  """Search iteration at A candidates, every width cmax/2, and its parts.

  The reward, supernet and Phi steps of every candidate count, alternated
  together; returns ({A: sum of the three medians}, {A: [reward, supernet, Phi]}).
  """
  counts = [int(a) for a in _CANDIDATE_COUNTS.value if a]
  cmax = max(int(c) for c in _CANDIDATES.value)
  meta = _META.value or None
  fns = {}
  for a, cands in _candidate_sets(counts, cmax, meta).items():
    sr = _searcher(_config("transitional", cands, meta))
    arch = np.array([cands.index(cmax // 2)] * sr.space.num_decisions, np.int32)
    fixed, one = tf.constant(arch), tf.constant(arch[None])
    fns[(a, "reward")] = lambda sr=sr, fixed=fixed: sr.reward_step(fixed, batch)["reward"].numpy()
    fns[(a, "supernet")] = lambda sr=sr, one=one: sr.supernet_step(one, batch)["loss"].numpy()
    fns[(a, "phi")] = lambda sr=sr: sr.phi_step().numpy()
  med = _alternate(fns, n)
  parts = {str(a): [med[(a, k)] for k in ("reward", "supernet", "phi")] for a in counts}
  return {a: float(sum(v)) for a, v in parts.items()}, parts


def _static_paths(archs, batch, n):
  """Dynamic vs static vs static+XLA supernet steps at the same archs, alternated."""
  cands = [int(c) for c in _CANDIDATES.value]
  dyn = _searcher(_config(_SHARING.value, cands, _META.value))
  static = _searcher(_config(_SHARING.value, cands, _META.value, static=True))
  static.net.set_weights(dyn.net.get_weights())
  fns, res = {}, {}
  archs = [tf.constant(a[None]) for a in archs]
  state = {"i": 0}

  def cycle(step):
    def run():
      a = archs[state["i"] % len(archs)]
      step(a, batch)["loss"].numpy()
    return run

  fns["dynamic"] = cycle(dyn.supernet_step)
  fns["static"] = cycle(static.supernet_step)
  if _XLA.value:
    # The search with search.jit_compile=True: XLA compiles the forward and
    # gradients; the first call compiles.
    xla_sr = _searcher(_config(_SHARING.value, cands, _META.value, static=True, jit=True))
    xla_sr.net.set_weights(dyn.net.get_weights())
    res["xla_compile_s"] = _timed(lambda: xla_sr.supernet_step(archs[0], batch)["loss"].numpy())
    fns["xla"] = cycle(xla_sr.supernet_step)
    # The dense child at the same widths with and without XLA: what XLA's own
    # kernels cost on this device, apart from anything the supernet does.
    dense_plain = [_dense_step_fn(dyn, dyn.space.widths(a[0].numpy())) for a in archs]
    dense_xla = [_dense_step_fn(dyn, dyn.space.widths(a[0].numpy()), jit_compile=True)
                 for a in archs]
    fns["dense"] = lambda: dense_plain[state["i"] % len(archs)](*batch).numpy()
    fns["dense_xla"] = lambda: dense_xla[state["i"] % len(archs)](*batch).numpy()
    # ... and at the largest candidate everywhere: the convolutions the static
    # path runs whatever the architecture.
    widest = dyn.space.widths(np.array(dyn.space.largest(), np.int32))
    widest_plain = _dense_step_fn(dyn, widest)
    widest_xla = _dense_step_fn(dyn, widest, jit_compile=True)
    fns["widest"] = lambda: widest_plain(*batch).numpy()
    fns["widest_xla"] = lambda: widest_xla(*batch).numpy()
  for f in fns.values():  # warm every path at every arch
    for _ in archs:
      f()
      state["i"] += 1
  ts = {k: [] for k in fns}
  for _ in range(n):
    for _ in archs:
      for k, f in fns.items():
        ts[k].append(_timed(f))
      state["i"] += 1
  med = {k: float(np.median(v)) for k, v in ts.items()}
  res["dynamic_step_s"], res["static_step_s"] = med["dynamic"], med["static"]
  res["static_vs_dynamic"] = med["static"] / med["dynamic"]
  if _XLA.value:
    res["xla_step_s"] = med["xla"]
    res["xla_step_vs_static"] = med["xla"] / med["static"]
    res["xla_traces"] = xla_sr._loss_and_grads.experimental_get_tracing_count()  # pylint: disable=protected-access
    res["dense_xla_vs_dense"] = med["dense_xla"] / med["dense"]
    res["widest_dense_s"], res["widest_dense_xla_s"] = med["widest"], med["widest_xla"]
    res["widest_dense_xla_vs_dense"] = med["widest_xla"] / med["widest"]
  else:
    res.update(xla_compile_s=None, xla_step_vs_static=None)
  return res


def main(argv):
  del argv
  load_before = os.getloadavg()
  cands = [int(c) for c in _CANDIDATES.value]
  cfg = _config(_SHARING.value, cands, _META.value)
  sr = _searcher(cfg)
  workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="search_step_")
  archs_file = _ARCHS_FILE.value or os.path.join(workdir, "search_step_archs.json")
  archs = _fixed_archs(sr, archs_file)
  rng = np.random.default_rng(_SEED.value)
  s = _IMAGE.value
  images = tf.constant(rng.normal(size=(_BATCH.value, s, s, 3)).astype(np.float32))
  labels = tf.constant(rng.integers(0, 10, _BATCH.value).astype(np.int32))
  batch = (images, labels)
  n = _ITERS.value
  res = {"model": _MODEL.value, "sharing": cfg.search.sharing, "candidates": cands,
         "meta_width": cfg.model.meta_width, "batch_size": _BATCH.value, "iters": n,
         "num_archs": len(archs), "archs_file": archs_file}

  # One trace for every architecture (also warms the supernet step up).
  trace_rng = np.random.default_rng(_SEED.value + 1)
  for _ in range(_TRACE_ARCHS.value):
    arch = np.array([sr.space.sample_uniform(trace_rng)], np.int32)
    sr.supernet_step(tf.constant(arch), batch)["loss"].numpy()
  res["traces"] = sr.train_traces

  # Per architecture: supernet step vs dense child, and the reward step.
  per_arch = []
  for arch in archs:
    dense_step = _dense_step_fn(sr, sr.space.widths(arch))
    one, fixed = tf.constant(arch[None]), tf.constant(arch)
    med = _alternate({
        "supernet": lambda one=one: sr.supernet_step(one, batch)["loss"].numpy(),
        "dense": lambda ds=dense_step: ds(images, labels).numpy(),
        "reward": lambda fixed=fixed: sr.reward_step(fixed, batch)["reward"].numpy(),
    }, n)
    med["ratio"] = med["supernet"] / med["dense"]
    per_arch.append(med)
  sup = [m["supernet"] for m in per_arch]
  den = [m["dense"] for m in per_arch]
  res["supernet_vs_dense_ratio"] = float(np.sum(sup) / np.sum(den))
  res["supernet_vs_dense_max"] = float(max(m["ratio"] for m in per_arch))
  res["supernet_vs_dense_per_arch"] = [round(m["ratio"], 3) for m in per_arch]
  res["supernet_step_s"] = float(np.median(sup))
  res["dense_step_s"] = float(np.median(den))
  res["reward_step_s"] = float(np.median([m["reward"] for m in per_arch]))

  # Search iteration: the traced loop against its separately timed parts, at
  # the same iterations (so the same architectures).
  it = _loop_and_parts(sr, batch, _LOOP_STEPS.value, _LOOP_ROUNDS.value)
  spl = _LOOP_STEPS.value
  res["iter_reward_step_s"], res["iter_supernet_step_s"], res["phi_step_s"] = (
      it["reward"], it["supernet"], it["phi"])
  res["iter_parts_s"] = it["parts"]
  res["search_iter_s_spl1"], res[f"search_iter_s_spl{spl}"] = it["spl1"], it["multi"]
  res["host_overhead_spl1"] = 1.0 - it["parts"] / it["spl1"]
  res[f"host_overhead_spl{spl}"] = 1.0 - it["parts"] / it["multi"]
  res["host_overhead"] = res[f"host_overhead_spl{spl}"]
  res["search_iter_s"] = it["multi"]
  res["phi_share"] = it["phi"] / it["multi"]
  res["search_loop"] = (f"runner.Runner.run_steps over the Searcher task, steps 1..{spl}, "
                        "controller frozen")

  if _STATIC_ARCHS.value:
    res.update(_static_paths(archs[:_STATIC_ARCHS.value], batch, n))
  else:
    res.update(xla_compile_s=None, xla_step_vs_static=None)
  if [a for a in _CANDIDATE_COUNTS.value if a]:
    res["candidates_iter_s"], res["candidates_parts_s"] = _candidates_iter_s(batch, n)
  res["traces_after"] = sr.supernet_step.experimental_get_tracing_count()
  res["loop_traces"] = it["loop_traces"]
  res["reward_traces"] = sr.reward_traces
  res["loadavg_before"] = [round(x, 2) for x in load_before]
  res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
  res["cpus"] = os.cpu_count()
  res["device"] = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
  if _JSON.value:
    print(json.dumps(res))
  else:
    for k, v in res.items():
      print(f"{k:28s} {v}")


if __name__ == "__main__":
  cli.run(main)
