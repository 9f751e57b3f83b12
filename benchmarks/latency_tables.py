r"""Build and validate a latency table from scratch, and write its results record.

  python benchmarks/latency_tables.py --config=configs/cifar10_resnet20_50.py \
      --format=int8 --name=cifar10_resnet20_50_int8 [--image_size=96] [--keep=DIR]

Runs the two commands a user runs, with their defaults, in a fresh
temporary directory (no cached conversions):

  python -m aps_tf.latency build --config=C --format=F --out=DIR/table.json
  python -m aps_tf.latency validate --config=C --table=DIR/table.json \
      --plot=docs/results/latency_NAME.png --result=DIR/validation.json

and writes docs/results/latency_NAME.json (title, command, date, machine,
versions, notes with the load average before and after, results: the
validation's statistics and both wall times). --image_size overrides
data.image_size (MobileNetV2 at 96x96).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

_CONFIG = flags.DEFINE_string("config", None, "Config file.", required=True)
_FORMAT = flags.DEFINE_string("format", "int8", "Table format.")
_NAME = flags.DEFINE_string("name", None, "Record name: docs/results/latency_NAME.json.",
                            required=True)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Override data.image_size.")
_OUT_DIR = flags.DEFINE_string("out_dir", "docs/results", "Where the record and plot go.")
_KEEP = flags.DEFINE_string("keep", None, "Work here instead of a temporary directory "
                            "(kept; must not hold a table, so the build starts from scratch).")


def _cpu() -> str:
  try:
    with open("/proc/cpuinfo") as f:  # local machine facts, not run files
      for line in f:
        if line.lower().startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _load() -> str:
  return " ".join(f"{x:.1f}" for x in os.getloadavg())


def _run(cmd: list[str]) -> tuple[float, str]:
  t = time.time()
  p = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
  return time.time() - t, p.stdout


def main(argv):
  del argv
  work = _KEEP.value or tempfile.mkdtemp(prefix="aps-latency-")
  os.makedirs(work, exist_ok=True)
  table = os.path.join(work, "table.json")
  if os.path.exists(table):
    raise app.UsageError(f"{table} exists; this benchmark builds from scratch")
  plot = os.path.join(_OUT_DIR.value, f"latency_{_NAME.value}.png")
  result = os.path.join(work, "validation.json")
  extra = [f"--config.data.image_size={_IMAGE_SIZE.value}"] if _IMAGE_SIZE.value else []
  py = [sys.executable, "-m", "aps_tf.latency"]
  build = py + ["build", f"--config={_CONFIG.value}"] + extra + [
      f"--format={_FORMAT.value}", f"--out={table}", "--noprogress"]
  validate = py + ["validate", f"--config={_CONFIG.value}"] + extra + [
      f"--table={table}", f"--plot={plot}", f"--result={result}", "--noprogress"]
  load_before = _load()
  build_s, _ = _run(build)
  validate_s, out = _run(validate)
  load_after = _load()
  print(out.strip().splitlines()[-1])
  with open(result) as f:  # the tool's own output file
    r = json.load(f)
  results = {k: v for k, v in r.items() if isinstance(v, (int, float)) and not isinstance(
      v, bool)}
  for m, e in zip(r["uniform_multipliers"], r["uniform_signed_rel_error"]):
    results[f"uniform_m{m:.2f}_signed_rel_error"] = e
  results.update(build_wall_s=round(build_s, 1), validate_wall_s=round(validate_s, 1))
  with open(table) as f:
    tab = json.load(f)
  results["table_scale"] = tab["const_fit"]["scale"]
  results["table_const_ms"] = tab["const_ms"]
  this = " ".join(shlex.quote(a) for a in [
      "python", "benchmarks/latency_tables.py", f"--config={_CONFIG.value}",
      f"--format={_FORMAT.value}", f"--name={_NAME.value}"] + (
          [f"--image_size={_IMAGE_SIZE.value}"] if _IMAGE_SIZE.value else []))
  record = {
      "title": f"Latency table, {r['model']} {tuple(r['input_shape'])} {r['format']}: built "
               "and validated from scratch with defaults",
      "command": this + "  # = python -m aps_tf.latency build --config=C --format=F "
                 "--out=T && python -m aps_tf.latency validate --config=C --table=T",
      "date": datetime.date.today().isoformat(),
      "machine": f"{_cpu()}, {os.cpu_count()} cores, {r['threads']} LiteRT thread(s)",
      "versions": {"python": platform.python_version(),
                   "tensorflow": importlib.metadata.version("tensorflow"),
                   "keras": importlib.metadata.version("keras"),
                   "ai-edge-litert": importlib.metadata.version("ai-edge-litert")},
      "seeds": 1,
      "notes": f"Load average (1, 5, 15 min) {load_before} before, {load_after} after; "
               "the machine was shared, so these timings are not quiet-machine results. "
               f"Plot: latency_{_NAME.value}.png.",
      "results": results,
  }
  path = os.path.join(_OUT_DIR.value, f"latency_{_NAME.value}.json")
  with open(path + ".tmp", "w") as f:  # the benchmark's own output
    json.dump(record, f, indent=1)
    f.write("\n")
  os.replace(path + ".tmp", path)
  print(f"wrote {path} (build {build_s:.0f} s, validate {validate_s:.0f} s)")


if __name__ == "__main__":
  app.run(main)
