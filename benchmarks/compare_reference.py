r"""Search steps of aps-tf against the authors' PyTorch release, like for like.

Both sides run the same fixed architectures (`--archs_file`, written and read
as `benchmarks/search_step.py` does, with its flags: `--candidates`,
`--meta_width`, `--batch_size`, `--num_archs`, `--seed`, `--iters`), alternated
in one invocation: for each of `--rounds` rounds, this process times aps-tf's
steps (one long-lived `Searcher`, so one trace for all rounds), then
`benchmarks/reference_step.py` times the release's under `--torch_python`.
Per side and round: medians over `--iters` per architecture, then medians over
the architectures; across rounds, medians again.

aps-tf, per architecture (as `benchmarks/search_step.py` times them):
  reward_step_s    Searcher.reward_step at the fixed architecture
  supernet_step_s  Searcher.supernet_step at the fixed architecture
  phi_step_s       Searcher.phi_step (transitional sharing)
  dense_step_s     the dense child at the architecture's widths (aps_tf.models.dense,
                   as `benchmarks/search_step.py` times it)
The release (see benchmarks/reference_step.py): its reward step
(`Architect.step`), its supernet step fused with its Phi step, and the Phi part
alone (the supernet step is the fused step minus the Phi part); and a plain
PyTorch ResNet-20 at the same widths (its `dense_step_s`).

Ratios (aps-tf / release; below 1 means aps-tf is faster):
  search_iter      (reward + supernet + Phi) / (reward + fused supernet-and-Phi)
  supernet_step    supernet / (fused - Phi part)
  supernet_and_phi (supernet + Phi) / fused
  reward_step      reward / reward
  phi_step         Phi / Phi part
  dense_step       aps-tf's dense child / PyTorch's, at the same widths: the two
                   frameworks' convolution training on this machine, which bounds
                   what any supernet step can reach (it runs the same convolutions)

  python benchmarks/compare_reference.py --reference_dir=/tmp/aps_ref \
      --torch_python=/path/to/venv-with-torch/bin/python --iters=3 --rounds=2 --json
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=g-import-not-at-top

from aps_tf import cli  # pylint: disable=g-import-not-at-top
from aps_tf import errors  # pylint: disable=g-import-not-at-top
import search_step  # pylint: disable=g-import-not-at-top  (its flags and builders)

_REFERENCE_DIR = flags.DEFINE_string(
    "reference_dir", None, "Directory of the authors' release "
    "(github.com/haolibai/APS-channel-search, e.g. a `git archive` export).")
_TORCH_PYTHON = flags.DEFINE_string("torch_python", None,
                                    "A Python with torch and numpy for the release's side.")
_REF_THREADS = flags.DEFINE_integer("reference_threads", 0,
                                   "torch intra-op threads of the release's side (0: torch's).")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Alternated rounds (aps-tf, release, ...).")
_TIMEOUT = flags.DEFINE_integer("reference_timeout_s", 3600,
                                "Limit of one run of the release's benchmark.")

_REFERENCE_STEP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_step.py")


def _check_inputs():
  ref = _REFERENCE_DIR.value
  if not ref or not os.path.isfile(os.path.join(ref, "nets", "resnet_20s_width.py")):
    raise errors.UserError(f"--reference_dir={ref}: expected the authors' release there "
                           "(nets/resnet_20s_width.py), not found")
  py = _TORCH_PYTHON.value
  if not py or not os.access(py, os.X_OK):
    raise errors.UserError(f"--torch_python={py}: expected an executable Python with torch "
                           "installed, not found")
  probe = subprocess.run([py, "-c", "import torch, numpy"], capture_output=True, text=True,
                         check=False)
  if probe.returncode:
    last = (probe.stderr.strip().splitlines() or ["?"])[-1]
    raise errors.UserError(f"--torch_python={py}: expected torch and numpy importable, "
                           f"got: {last}")


def _ours(sr, archs, batch, n):
  """aps-tf's per-architecture step medians, then medians over the architectures."""
  phi = lambda: sr.phi_step().numpy()  # pylint: disable=unnecessary-lambda-assignment
  per_arch = []
  if not hasattr(sr, "_dense_steps"):  # built once: one trace per architecture
    sr._dense_steps = [search_step._dense_step_fn(sr, sr.space.widths(a)) for a in archs]  # pylint: disable=protected-access
  for arch, dense_step in zip(archs, sr._dense_steps):  # pylint: disable=protected-access
    one, fixed = tf.constant(arch[None]), tf.constant(arch)
    per_arch.append(search_step._alternate({  # pylint: disable=protected-access
        "supernet_step_s": lambda one=one: sr.supernet_step(one, batch)["loss"].numpy(),
        "reward_step_s": lambda fixed=fixed: sr.reward_step(fixed, batch)["reward"].numpy(),
        "phi_step_s": phi,
        "dense_step_s": lambda ds=dense_step: ds(*batch).numpy(),
    }, n))
  return {k: float(np.median([m[k] for m in per_arch])) for k in per_arch[0]}


def _reference(archs_file, n):
  cmd = [_TORCH_PYTHON.value, _REFERENCE_STEP, f"--reference_dir={_REFERENCE_DIR.value}",
         f"--archs_file={archs_file}", f"--num_archs={search_step._NUM_ARCHS.value}",  # pylint: disable=protected-access
         f"--iters={n}", f"--batch_size={search_step._BATCH.value}",  # pylint: disable=protected-access
         f"--seed={search_step._SEED.value}", "--skip_iteration", f"--threads={_REF_THREADS.value}", "--json"]  # pylint: disable=protected-access
  p = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=_TIMEOUT.value)
  if p.returncode == 2:
    raise errors.UserError((p.stderr.strip().splitlines() or ["reference_step.py failed"])[-1])
  if p.returncode:
    raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-4000:]}")
  return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv):
  del argv
  _check_inputs()
  if search_step._SHARING.value != "transitional":  # pylint: disable=protected-access
    raise errors.UserError(f"--sharing={search_step._SHARING.value}: the release's supernet "  # pylint: disable=protected-access
                           "is transitional; expected --sharing=transitional")
  cands = [int(c) for c in search_step._CANDIDATES.value]  # pylint: disable=protected-access
  sr = search_step._searcher(search_step._config("transitional", cands,  # pylint: disable=protected-access
                                                 search_step._META.value))  # pylint: disable=protected-access
  archs_file = search_step._ARCHS_FILE.value or os.path.join(  # pylint: disable=protected-access
      search_step.tempfile.mkdtemp(prefix="compare_reference_"), "search_step_archs.json")
  archs = search_step._fixed_archs(sr, archs_file)  # pylint: disable=protected-access
  rng = np.random.default_rng(search_step._SEED.value)  # pylint: disable=protected-access
  s, b = search_step._IMAGE.value, search_step._BATCH.value  # pylint: disable=protected-access
  batch = (tf.constant(rng.normal(size=(b, s, s, 3)).astype(np.float32)),
           tf.constant(rng.integers(0, 10, b).astype(np.int32)))
  n = search_step._ITERS.value  # pylint: disable=protected-access
  ours, ref, runs = [], [], []
  for r in range(_ROUNDS.value):
    t, load = time.perf_counter(), os.getloadavg()[0]
    ours.append(_ours(sr, archs, batch, n))
    runs.append({"round": r, "side": "aps_tf", "wall_s": round(time.perf_counter() - t, 1),
                 "loadavg_1m": round(load, 2)})
    t, load = time.perf_counter(), os.getloadavg()[0]
    ref.append(_reference(archs_file, n))
    runs.append({"round": r, "side": "reference", "wall_s": round(time.perf_counter() - t, 1),
                 "loadavg_1m": round(load, 2)})
    print(json.dumps({"round": r, "aps_tf": ours[-1],  # progress: a partial result survives
                      "reference": {k: v for k, v in ref[-1].items() if k.endswith("_s")}}),
          file=sys.stderr, flush=True)
  med = lambda rows, k: float(np.median([x[k] for x in rows]))  # pylint: disable=unnecessary-lambda-assignment
  o = {k: med(ours, k) for k in ("reward_step_s", "supernet_step_s", "phi_step_s",
                                 "dense_step_s")}
  o["search_iter_s"] = o["reward_step_s"] + o["supernet_step_s"] + o["phi_step_s"]
  p = {k: med(ref, k) for k in ("reward_step_s", "supernet_step_s", "fused_step_s",
                                "phi_step_s", "dense_step_s")}
  p["search_iter_s"] = p["reward_step_s"] + p["fused_step_s"]
  res = {
      "num_archs": len(archs), "iters": n, "rounds": _ROUNDS.value, "archs_file": archs_file,
      "candidates": cands, "meta_width": sr.cfg.model.meta_width, "batch_size": b,
      "aps_tf": {k: round(v, 4) for k, v in o.items()},
      "reference": {k: round(v, 4) for k, v in p.items()},
      "ratio": {
          "search_iter": round(o["search_iter_s"] / p["search_iter_s"], 3),
          "supernet_step": round(o["supernet_step_s"] / p["supernet_step_s"], 3),
          "supernet_and_phi": round((o["supernet_step_s"] + o["phi_step_s"])
                                    / p["fused_step_s"], 3),
          "reward_step": round(o["reward_step_s"] / p["reward_step_s"], 3),
          "phi_step": round(o["phi_step_s"] / p["phi_step_s"], 3),
          "dense_step": round(o["dense_step_s"] / p["dense_step_s"], 3),
      },
      "search_iter_goal": 0.6,
      "traces": sr.train_traces,
      "runs": runs,
      "reference_threads": ref[-1].get("threads"),
      "torch": ref[-1].get("torch"),
      "loadavg_end": [round(x, 2) for x in os.getloadavg()],
      "cpus": os.cpu_count(),
  }
  if search_step._JSON.value:  # pylint: disable=protected-access
    print(json.dumps(res))
  else:
    for k, v in res.items():
      print(f"{k:18s} {v}")


if __name__ == "__main__":
  cli.run(main)
