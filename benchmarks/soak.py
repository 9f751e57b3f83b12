r"""Fault soak: SIGKILL the search, retraining and export at random moments,
inject a NaN loss, lose one of two MultiWorkerMirroredStrategy workers.

  python benchmarks/soak.py [--kills=10] [--seed=0] [--out=DIR] \
      [--scenarios=search,train,export,nan,mwms]

search / train: one unkilled reference run, then the same command killed with
SIGKILL after a random (seeded) delay and rerun until it finishes; the end
state must equal the reference: the same arch.json (search) or bit-identical
retrained weights (train), every metrics step exactly once.
export: the export binary killed at random moments; after each kill no
version directory (what TF-Serving loads) may be half-written, and the next
export must complete.
nan: a learning rate of 1e38: exit 2 with a one-line message, and the last
checkpoint restorable and finite.
mwms: two search workers on localhost; one is killed; the other must exit by
itself within --mwms_deadline_s with a clear message.

Prints a table (and writes OUT/soak.json). Not part of `make test`; the suite
runs the search scenario with one kill (tests/test_soak.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
import numpy as np

from aps_tf import cli
from aps_tf import errors

SCENARIOS = ("search", "train", "export", "nan", "mwms")

_KILLS = flags.DEFINE_integer("kills", 10, "SIGKILLs per killed scenario.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the kill moments.")
_OUT = flags.DEFINE_string("out", None, "Output directory (default: a temporary one).")
_SCENARIOS = flags.DEFINE_list("scenarios", list(SCENARIOS),
                               "Scenarios to run.")
_SEARCH_EPOCHS = flags.DEFINE_integer("search_epochs", 10, "Search epochs (3 steps each).")
_REFERENCE_BESIDE = flags.DEFINE_bool(
    "reference_beside", False,
    "Run the search scenario's unkilled reference at the same time as the killed "
    "runs instead of before them: less wall time on an otherwise idle machine, "
    "and reference_s (then until both finish) and the resume times include the "
    "two runs' contention.")
_TRAIN_EPOCHS = flags.DEFINE_integer("train_epochs", 2, "Retraining epochs (22 steps each).")
_MWMS_DEADLINE = flags.DEFINE_integer("mwms_deadline_s", 180,
                                      "How long the surviving worker may take to exit.")

# The tiny search of the tests (resnet8, 3 steps per epoch) on digits.
SEARCH_FLAGS = ["--config=configs/quick.py", "--config.model.name=resnet8",
                "--config.model.candidates=(4,8,16)", "--config.search.reward.target=300000",
                "--config.search.batch_size=16", "--config.search.steps_per_epoch=3",
                "--config.search.warmup_epochs=1",
                "--config.search.checkpoint_every_steps=2", "--config.search.log_every_steps=1",
                "--config.search.analysis_every_steps=100", "--config.search.top_n=2",
                "--config.search.beam_width=3", "--config.search.rescore_batches=1",
                "--noprogress"]
TRAIN_FLAGS = ["--config=configs/quick.py", "--config.train.checkpoint_every_steps=5",
               "--noprogress"]


def search_flags(epochs: int) -> list[str]:
  return SEARCH_FLAGS + [f"--config.search.epochs={epochs}",
                         f"--config.search.lr_decay_epochs=({max(1, epochs - 2)},)"]


def train_flags(epochs: int) -> list[str]:
  return TRAIN_FLAGS + [f"--config.train.epochs={epochs}"]
EXPORT_FORMATS = "saved_model,tflite_float32,tflite_int8"


def env(**extra) -> dict:
  e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
  e.update(extra)
  return e


def _cmd(module: str, *args: str) -> list[str]:
  return [sys.executable, "-m", module, *args]


def _run(cmd, timeout=900) -> subprocess.CompletedProcess:
  return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True,
                        timeout=timeout)


def kill_loop(cmd: list[str], kills: int, rng: np.random.Generator, total: int,
              progress, log_dir: str, timeout: float = 1800) -> dict:
  """Runs `cmd`, SIGKILLs it `kills` times and reruns it each time, then lets
  it finish. `progress()` counts the run's saved work (0..total). Kill i comes
  at a random moment: once progress reaches a random point in [0, total)
  (drawn sorted, so a point already passed means a kill while starting up or
  restoring), plus a random 0-0.5 s. A resume's time is from its launch to
  the first growth of progress()."""
  targets = sorted(int(t) for t in rng.integers(0, max(total, 1), kills))
  extras = rng.uniform(0.0, 0.5, kills)
  done_kills, launches, resume_times = 0, 0, []
  deadline = time.time() + timeout
  while True:
    launches += 1
    start, before = time.time(), progress()
    with open(os.path.join(log_dir, f"launch{launches}.err"), "w") as err:
      proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=err)
      resumed_at, reached = None, None
      while proc.poll() is None and time.time() < deadline:
        now = progress()
        if resumed_at is None and launches > 1 and now > before:
          resumed_at = time.time() - start
        if done_kills < kills and reached is None and now >= targets[done_kills]:
          reached = time.time()
        if reached is not None and time.time() - reached >= extras[done_kills]:
          proc.send_signal(signal.SIGKILL)
          proc.wait()
          done_kills += 1
          break
        time.sleep(0.02)
      if proc.poll() is None:
        proc.kill()
        raise RuntimeError(f"{cmd} did not finish within {timeout}s")
    if resumed_at is not None:
      resume_times.append(resumed_at)
    if proc.returncode != -signal.SIGKILL:
      with open(os.path.join(log_dir, f"launch{launches}.err")) as f:
        tail = f.read()[-2000:]
      if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}: {tail}")
      return {"kills": done_kills, "resumes": launches - 1,
              "max_resume_s": max(resume_times) if resume_times else None,
              "kill_points": targets}


def _metrics_lines(workdir: str) -> int:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    return sum(1 for _ in f)


def _train_lines(workdir: str) -> int:
  """Search steps logged (log_every_steps=1) since the last resume point."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    return sum('"kind": "train"' in line for line in f)


def _train_progress(workdir: str) -> int:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  path = tf.train.latest_checkpoint(os.path.join(workdir, "ckpt"))
  return int(path.rsplit("-", 1)[1]) if path else 0


def _checkpoint_tensors(path: str) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  reader = tf.train.load_checkpoint(path)
  return {k: reader.get_tensor(k) for k, dtype in reader.get_variable_to_dtype_map().items()
          if "save_counter" not in k and dtype != tf.variant}  # variant: iterator state


def _same_tensors(a: dict, b: dict) -> bool:
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _arch_without_time(path: str) -> dict:
  with open(path) as f:
    arch = json.load(f)
  arch.get("provenance", {}).pop("created", None)
  return arch


def _check_reference(proc: subprocess.Popen, logs: str) -> None:
  if proc.returncode:
    with open(os.path.join(logs, "reference.err")) as f:
      raise RuntimeError(f"the reference search exited {proc.returncode}: {f.read()[-2000:]}")


def run_search(out: str, kills: int, seed: int, epochs: int = 10,
               reference_beside: bool = False) -> dict:
  """Killed search vs an unkilled one: arch.json, checkpoint, metrics steps.

  With `reference_beside`, the reference runs while the killed runs do.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  args = search_flags(epochs)
  ref, killed = os.path.join(out, "search_ref"), os.path.join(out, "search_killed")
  logs = os.path.join(out, "search_logs")
  os.makedirs(logs, exist_ok=True)
  t0 = time.time()
  with open(os.path.join(logs, "reference.err"), "w") as err:
    reference = subprocess.Popen(_cmd("aps_tf.search", f"--workdir={ref}", *args), cwd=ROOT,
                                 env=env(), stdout=subprocess.DEVNULL, stderr=err)
    try:
      if not reference_beside:
        reference.wait()
        ref_time = time.time() - t0
        _check_reference(reference, logs)
      total = 3 * epochs
      res = kill_loop(_cmd("aps_tf.search", f"--workdir={killed}", *args), kills,
                      np.random.default_rng(seed), total, lambda: _train_lines(killed), logs)
    except BaseException:
      reference.kill()  # the killed runs failed: no orphaned reference
      raise
    finally:
      reference.wait()
  if reference_beside:
    ref_time = time.time() - t0  # until both finished
    _check_reference(reference, logs)
  steps = [json.loads(l)["step"] for l in open(os.path.join(killed, "metrics.jsonl"))
           if '"kind": "train"' in l]
  ref_recs = [json.loads(l) for l in open(os.path.join(ref, "metrics.jsonl"))]
  got_recs = [json.loads(l) for l in open(os.path.join(killed, "metrics.jsonl"))]
  same_ckpt = _same_tensors(
      _checkpoint_tensors(tf.train.latest_checkpoint(os.path.join(ref, "ckpt"))),
      _checkpoint_tensors(tf.train.latest_checkpoint(os.path.join(killed, "ckpt"))))
  same_arch = (_arch_without_time(os.path.join(ref, "arch.json")) ==
               _arch_without_time(os.path.join(killed, "arch.json")))
  res.update(scenario="search", reference_s=round(ref_time, 1),
             steps_once=steps == list(range(1, total + 1)),
             same_metrics=ref_recs == got_recs, same_arch=same_arch, same_checkpoint=same_ckpt,
             identical=same_arch and same_ckpt and steps == list(range(1, total + 1)))
  return res


def _write_tiny_arch(path: str) -> None:
  from aps_tf import archfile  # pylint: disable=g-import-not-at-top
  from aps_tf import data  # pylint: disable=g-import-not-at-top
  from aps_tf import models  # pylint: disable=g-import-not-at-top
  from aps_tf.configs import quick  # pylint: disable=g-import-not-at-top
  cfg = quick.get_config()
  info = data.dataset_info(cfg.data)
  t = models.topology_from_config(cfg.model, info.image_shape, info.num_classes)
  idx = [0] * t.space.num_decisions
  archfile.save(archfile.make(t, t.space.widths(idx), idx, models.search_space_record(cfg.model)),
                path)


def _keras_weights(workdir: str) -> list:
  import keras  # pylint: disable=g-import-not-at-top
  return keras.models.load_model(os.path.join(workdir, "model.keras"),
                                 compile=False).get_weights()


def run_train(out: str, kills: int, seed: int, epochs: int = 2) -> dict:
  """Killed retraining vs an unkilled one: weights bit-identical, same metrics."""
  args = train_flags(epochs)
  arch = os.path.join(out, "arch.json")
  _write_tiny_arch(arch)
  ref, killed = os.path.join(out, "train_ref"), os.path.join(out, "train_killed")
  t0 = time.time()
  r = _run(_cmd("aps_tf.train", f"--arch={arch}", f"--workdir={ref}", *args))
  if r.returncode:
    raise RuntimeError(r.stderr[-2000:])
  ref_time = time.time() - t0
  logs = os.path.join(out, "train_logs")
  os.makedirs(logs, exist_ok=True)
  with open(os.path.join(ref, "metrics.json")) as f:
    total = json.load(f)["steps"]
  res = kill_loop(_cmd("aps_tf.train", f"--arch={arch}", f"--workdir={killed}", *args),
                  kills, np.random.default_rng(seed + 1), max(total - 5, 1),  # 5: ckpt interval
                  lambda: _train_progress(killed), logs)
  a, b = _keras_weights(ref), _keras_weights(killed)
  same_weights = len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
  with open(os.path.join(ref, "metrics.json")) as f:
    m_ref = json.load(f)
  with open(os.path.join(killed, "metrics.json")) as f:
    m_got = json.load(f)
  same_metrics = all(m_ref[k] == m_got[k] for k in ("test_accuracy", "test_loss", "steps"))
  res.update(scenario="train", reference_s=round(ref_time, 1), same_weights=same_weights,
             same_metrics=same_metrics, steps_once=m_got["steps"] == m_ref["steps"],
             identical=same_weights and same_metrics)
  return res


def _versions_complete(model_dir: str) -> tuple[int, int, int]:
  """(complete versions, half-written versions, hidden temp dirs) under model_dir."""
  complete = half = temps = 0
  if not os.path.isdir(model_dir):
    return 0, 0, 0
  for name in os.listdir(model_dir):
    path = os.path.join(model_dir, name)
    if not name.isdigit():
      temps += name.startswith(".")
      continue
    try:
      with open(os.path.join(path, "export_report.json")) as f:
        report = json.load(f)
      ok = os.path.exists(os.path.join(path, "saved_model.pb")) and all(
          os.path.exists(os.path.join(path, r["file"])) for r in report["results"][1:])
    except (OSError, ValueError, KeyError):
      ok = False
    complete += ok
    half += not ok
  return complete, half, temps


def run_export(out: str, kills: int, seed: int, epochs: int = 2) -> dict:
  """Export killed at random moments: never a half-written version; then completes."""
  workdir = os.path.join(out, "train_ref")
  if not os.path.exists(os.path.join(workdir, "model.keras")):
    arch = os.path.join(out, "arch.json")
    _write_tiny_arch(arch)
    r = _run(_cmd("aps_tf.train", f"--arch={arch}", f"--workdir={workdir}",
                  *train_flags(epochs)))
    if r.returncode:
      raise RuntimeError(r.stderr[-2000:])
  base = os.path.join(out, "serving")
  cmd = _cmd("export.export_model", f"--workdir={workdir}", f"--export_base={base}",
             "--model_name=soak", f"--formats={EXPORT_FORMATS}", "--force_new_version")
  t0 = time.time()
  r = _run(cmd)
  if r.returncode:
    raise RuntimeError(r.stderr[-2000:])
  ref_time = time.time() - t0
  rng = np.random.default_rng(seed + 2)
  model_dir = os.path.join(base, "soak")
  half_seen, done_kills, completed = 0, 0, 0
  for _ in range(kills):
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    delay, start = float(rng.uniform(0.5, ref_time)), time.time()
    while proc.poll() is None and time.time() - start < delay:
      _, half, _ = _versions_complete(model_dir)  # what a model server would see now
      half_seen = max(half_seen, half)
      time.sleep(0.05)
    if proc.poll() is None:
      proc.send_signal(signal.SIGKILL)
      done_kills += 1
    proc.wait()
    completed += proc.returncode == 0
    half_seen = max(half_seen, _versions_complete(model_dir)[1])
  before = _versions_complete(model_dir)[0]
  t0 = time.time()
  r = _run(cmd)
  complete, half, temps = _versions_complete(model_dir)
  return {"scenario": "export", "kills": done_kills, "resumes": done_kills,
          "reference_s": round(ref_time, 1), "max_resume_s": round(time.time() - t0, 1),
          "half_written_versions_seen": half_seen, "leftover_temp_dirs": temps,
          "next_export_ok": r.returncode == 0 and complete == before + 1 and half == 0,
          "identical": r.returncode == 0 and half_seen == 0 and half == 0}


def _one_line_exit2(r: subprocess.CompletedProcess) -> bool:
  lines = r.stderr.strip().splitlines()
  return r.returncode == 2 and "Traceback" not in r.stderr and bool(lines) and \
      lines[-1].startswith("error: non-finite loss")


def _finite_checkpoint(path: str | None) -> bool:
  if path is None:
    return False
  return all(np.all(np.isfinite(v)) for v in _checkpoint_tensors(path).values()
             if isinstance(v, np.ndarray) and v.dtype.kind == "f")


def run_nan(out: str) -> dict:
  """lr = 1e38 in search and in retraining: a clean stop, a good checkpoint."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  search = os.path.join(out, "nan_search")
  r1 = _run(_cmd("aps_tf.search", f"--workdir={search}", *search_flags(3),
                 "--config.search.lr=1e38"))
  arch = os.path.join(out, "arch.json")
  if not os.path.exists(arch):
    _write_tiny_arch(arch)
  train = os.path.join(out, "nan_train")
  r2 = _run(_cmd("aps_tf.train", f"--arch={arch}", f"--workdir={train}", *train_flags(1),
                 "--config.train.lr=1e38", "--config.train.checkpoint_every_steps=1"))
  ok_search = _one_line_exit2(r1) and _finite_checkpoint(
      tf.train.latest_checkpoint(os.path.join(search, "ckpt")))
  # Retraining saves no step-0 checkpoint: a NaN at step 1 leaves none, which is fine.
  latest = tf.train.latest_checkpoint(os.path.join(train, "ckpt"))
  ok_train = _one_line_exit2(r2) and (latest is None or _finite_checkpoint(latest))
  return {"scenario": "nan", "kills": 0, "resumes": 0, "search_exit": r1.returncode,
          "train_exit": r2.returncode, "search_message": r1.stderr.strip().splitlines()[-1:],
          "train_message": r2.stderr.strip().splitlines()[-1:],
          "train_checkpoint": latest, "identical": ok_search and ok_train}


def run_mwms(out: str, deadline_s: float) -> dict:
  """Two search workers; worker 1 is killed once training runs; worker 0 must exit."""
  workdir = os.path.join(out, "mwms")
  from aps_tf import distribute  # pylint: disable=g-import-not-at-top
  procs, errs = [], []
  for i, tf_config in enumerate(distribute.local_tf_configs(2)):
    err = open(os.path.join(out, f"mwms_worker{i}.err"), "w")  # pylint: disable=consider-using-with
    errs.append(err)
    procs.append(subprocess.Popen(
        _cmd("aps_tf.search", f"--workdir={workdir}", *search_flags(1000),
             "--config.strategy=multi_worker"),
        cwd=ROOT, env=env(TF_CONFIG=tf_config), stdout=subprocess.DEVNULL, stderr=err))
  start = time.time()
  try:
    while _metrics_lines(workdir) < 4 and time.time() - start < 600:
      if any(p.poll() is not None for p in procs):
        break
      time.sleep(0.1)
    started = all(p.poll() is None for p in procs)
    procs[1].send_signal(signal.SIGKILL)
    killed_at = time.time()
    while procs[0].poll() is None and time.time() - killed_at < deadline_s:
      time.sleep(0.2)
    exit_s = time.time() - killed_at if procs[0].poll() is not None else None
  finally:
    for p in procs:
      if p.poll() is None:
        p.send_signal(signal.SIGKILL)
      p.wait()
    for e in errs:
      e.close()
  with open(os.path.join(out, "mwms_worker0.err")) as f:
    lines = [l for l in f.read().strip().splitlines() if l.strip()]
  return {"scenario": "mwms", "kills": 1, "resumes": 0, "training_started": started,
          "survivor_exit_s": None if exit_s is None else round(exit_s, 1),
          "survivor_exit_code": procs[0].returncode if exit_s is not None else None,
          "survivor_last_line": lines[-1] if lines else "",
          "identical": exit_s is not None and procs[0].returncode == 2 and
                       lines[-1:] and lines[-1].startswith("error: ")}


def table(rows: list[dict]) -> str:
  head = ("| scenario | kills | resumes | end state as expected | max resume (s) | details |\n"
          "|---|---:|---:|---|---:|---|")
  out = [head]
  for r in rows:
    details = {k: v for k, v in r.items() if k not in (
        "scenario", "kills", "resumes", "identical", "max_resume_s")}
    resume = "-" if r.get("max_resume_s") is None else f"{r['max_resume_s']:.1f}"
    out.append(f"| {r['scenario']} | {r['kills']} | {r['resumes']} | "
               f"{'yes' if r['identical'] else 'NO'} | {resume} | "
               f"{json.dumps(details, default=str)} |")
  return "\n".join(out)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  for name in _SCENARIOS.value:
    if name not in SCENARIOS:
      raise app.UsageError(f"--scenarios: expected some of {', '.join(SCENARIOS)}, got {name!r}")
  out = _OUT.value or tempfile.mkdtemp(prefix="aps_soak_")
  if os.path.exists(out) and os.listdir(out):
    raise errors.WorkdirError(f"--out={out} is not empty; the soak needs a fresh directory")
  os.makedirs(out, exist_ok=True)
  rows = []
  for name in _SCENARIOS.value:
    t0 = time.time()
    if name == "search":
      row = run_search(out, _KILLS.value, _SEED.value, _SEARCH_EPOCHS.value,
                       _REFERENCE_BESIDE.value)
    elif name == "train":
      row = run_train(out, _KILLS.value, _SEED.value, _TRAIN_EPOCHS.value)
    elif name == "export":
      row = run_export(out, _KILLS.value, _SEED.value, _TRAIN_EPOCHS.value)
    elif name == "nan":
      row = run_nan(out)
    else:
      row = run_mwms(out, _MWMS_DEADLINE.value)
    row["wall_s"] = round(time.time() - t0, 1)
    rows.append(row)
    print(f"{name}: {json.dumps(row, default=str)}", flush=True)
  with open(os.path.join(out, "soak.json"), "w") as f:
    json.dump(rows, f, indent=2, default=str)
  print(table(rows))
  return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
  cli.run(main)
