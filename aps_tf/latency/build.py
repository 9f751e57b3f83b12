"""Building a latency table: on this machine, or from a phone's benchmark runs.

`build(cfg, out, ...)` measures every distinct unit spec of the config's
search space (`table.required_specs`), writing the table after each one, so
an interrupted build resumes where it stopped (and refuses a table measured
under another fingerprint). Then it times a few whole dense children
(smallest, largest and random ones: `calibration`) and fits a scale and a
constant (`finish`): the constant holds the input, the per-invocation
overhead and whatever the per-unit models do not see.

Only the config's shapes are used (`topology_of_config`), never its data.

Phones: `emit(cfg, dir)` writes every model as a `.tflite` file with a
manifest and `run_benchmarks.sh`, which runs LiteRT's `benchmark_model` on each
over adb and keeps one output file per model; `import_results(dir, out)`
parses those outputs (`benchmark_output.parse_ms`) into the same table.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

from absl import logging
import numpy as np

from aps_tf import errors
from aps_tf import fileio
from aps_tf import models
from aps_tf.latency import benchmark_output
from aps_tf.latency import measure
from aps_tf.latency import table as table_lib
from aps_tf.latency import units as units_lib
from aps_tf.models import dense
from aps_tf.models import topology as topo

MANIFEST = "manifest.json"
SCRIPT = "run_benchmarks.sh"


def topology_of_config(cfg) -> topo.Topology:
  """The config's network from its shapes alone (no dataset is read)."""
  from aps_tf.data import config as data_config  # pylint: disable=g-import-not-at-top
  name = cfg.data.name
  data_config.check_name(name)
  if name == "digits":
    channels, classes = 1, 10
  else:
    from aps_tf.data import tfds_source  # pylint: disable=g-import-not-at-top
    spec = tfds_source.SPECS[name]
    channels, classes = spec.channels, spec.num_classes
  size = int(cfg.data.image_size)
  return models.topology_from_config(cfg.model, (size, size, channels), classes)


def calibration_archs(t: topo.Topology, n: int, seed: int = 0) -> list[list[int]]:
  """Smallest, largest, then random decision vectors (reproducible)."""
  space = t.space
  archs = [space.smallest(), space.largest()]
  rng = np.random.default_rng(seed)
  while len(archs) < n:
    archs.append(space.sample_uniform(rng))
  return archs[:max(n, 1)]


def progress_bar(total: int, initial: int, desc: str, enabled: bool):
  """A tqdm bar of TOTAL items (starting at INITIAL), shared by build and validate."""
  try:
    import tqdm  # pylint: disable=g-import-not-at-top
    return tqdm.tqdm(total=total, initial=initial, desc=desc, disable=not enabled,
                     dynamic_ncols=True, mininterval=2.0)
  except ImportError:  # pragma: no cover
    return None


def _open(path: str, t: topo.Topology, fp: dict, runs: int, warmup: int) -> dict:
  """The partial table at `path` (resume) or a new one."""
  if not fileio.exists(path):
    return table_lib.new(t, fp, runs, warmup)
  tab = table_lib.read(path)
  if tab.get("format") != table_lib.FORMAT or tab.get("version") != table_lib.VERSION:
    raise table_lib.TableError(f"{path}: not a version-{table_lib.VERSION} latency table; "
                               "use another --out")
  table_lib.check_fingerprint(tab, fp, path)
  table_lib.check_model(tab, t, path)
  logging.warning("%s: resuming (%d measurements kept)", path, len(tab["measurements"]))
  return tab


def _measure_all(tab: dict, path: str | None, items: dict[str, Callable[[], float]],
                 store: dict, desc: str, progress: bool) -> None:
  """Runs every not-yet-measured item, saving the table after each one."""
  todo = [k for k in items if k not in store]
  bar = progress_bar(len(items), len(items) - len(todo), desc, progress)
  last_save = time.time()
  try:
    for k in todo:
      store[k] = items[k]()
      if bar is not None:
        bar.update(1)
      if path and time.time() - last_save > 2.0:
        table_lib.save(tab, path)
        last_save = time.time()
  finally:
    if bar is not None:
      bar.close()
    if path:
      table_lib.save(tab, path)


FITS = ("constant", "linear")


def finish(t: topo.Topology, tab: dict, fit: str = "linear") -> dict:
  """Derives the per-layer entries and fits them to the calibration models.

  fit='linear' (default): measured ~= scale * sum + const_ms by least
  squares over the calibration models (smallest, largest, random): the
  per-layer models can miss something that grows with the whole network
  (cache pressure of its larger arena: MobileNetV2 float32 here is
  under-predicted by ~17% with a constant alone); the entries are stored
  scaled. With one calibration model, or a fit that is not increasing, the
  scale stays 1.
  fit='constant': const_ms = median of measured - sum of unit entries.
  """
  if fit not in FITS:
    raise errors.UserError(f"--fit={fit!r}: expected one of {FITS}")
  tab["layers"] = table_lib.derive_layers(t, tab)
  cal = tab.get("calibration") or {}
  if not cal:
    raise table_lib.TableError("no calibration measurements; cannot fit the constant")
  measured = np.array([rec["ms"] for rec in cal.values()])
  sums = np.array([table_lib.unit_sum(t, tab, rec["widths"]) for rec in cal.values()])
  scale, const = 1.0, float(np.median(measured - sums))
  if fit == "linear" and len(cal) >= 2 and np.ptp(sums) > 0:
    a, b = np.polyfit(sums, measured, 1)
    if a > 0:
      scale, const = float(a), float(b)
  for layer in tab["layers"]:
    layer["entries"] = [[c_in, c_out, scale * ms] for c_in, c_out, ms in layer["entries"]]
  tab["const_ms"] = const
  tab["const_fit"] = {"method": fit,
                      "scale": scale, "measured_ms": measured.tolist(), "sum_ms": sums.tolist()}
  return tab


def build(cfg, out: str, fmt: str = "int8", threads: int = 1, runs: int = 50,
          warmup: int = 5, calibration: int = 3, progress: bool = True,
          only_units: int | None = None, fit: str = "linear") -> dict:
  """Measures (or resumes) the table of `cfg`'s search space into `out`.

  `only_units`: measure only the first N units' specs (tests; the table is
  then valid for nothing but a check of the machinery).
  """
  measure.export_format(fmt)
  if threads < 1 or runs < 1 or warmup < 0:
    raise errors.UserError(f"--threads={threads}, --runs={runs} must be >= 1 and --warmup="
                           f"{warmup} >= 0")
  t = topology_of_config(cfg)
  fp = measure.fingerprint(fmt, threads)
  tab = _open(out, t, fp, runs, warmup)
  specs = table_lib.required_specs(t)
  if only_units is not None:
    keep = units_lib.units(t)[:only_units]
    specs = {k: s for k, s in specs.items()
             if any(k in _unit_keys(t, u) for u in keep)}

  def timer(s):
    def run():
      ms = measure.time_content(measure.spec_content(s, fmt), (s.height, s.width, s.c_in),
                                threads, runs, warmup)
      return {"spec": s.to_dict(), "ms": ms}
    return run

  _measure_all(tab, out, {k: timer(s) for k, s in specs.items()}, tab["measurements"],
               "layers", progress)
  if only_units is not None:
    return tab
  tab.setdefault("calibration", {})
  archs = calibration_archs(t, calibration)

  def whole(arch):
    def run():
      widths = t.space.widths(arch)
      ms = measure.time_model(dense.build(t, widths), fmt, threads, runs, warmup)
      return {"decisions": list(arch), "widths": widths, "ms": ms}
    return run

  _measure_all(tab, out, {arch_key(a): whole(a) for a in archs}, tab["calibration"],
               "calibration", progress)
  finish(t, tab, fit)
  table_lib.validate(tab, out, t)
  table_lib.save(tab, out)
  return tab


def _unit_keys(t, u) -> set[str]:
  keys = set()
  for c_in, c_out in units_lib.width_pairs(t, u):
    s = units_lib.entry_spec(t, u, c_in, c_out)
    if s is not None:
      keys.add(s.key)
      tail = units_lib.tail_spec(s)
      if tail is not None:
        keys.add(tail.key)
  return keys


def arch_key(arch) -> str:
  """The table's key of a whole child (its decisions)."""
  return "arch_" + "-".join(str(int(a)) for a in arch)


# -- phones -----------------------------------------------------------------
_SCRIPT = r"""#!/bin/sh
# Runs LiteRT's benchmark_model on every model of this directory over adb and
# keeps one output file per model in RESULTS_DIR (default: results). Rerun to
# resume. Then, on the host:
#   python -m aps_tf.latency build --config=CONFIG --import=RESULTS_DIR --out=TABLE.json
#
# Needs: adb with one device attached, and the benchmark_model binary for the
# phone's ABI pushed to $BENCHMARK_MODEL (default /data/local/tmp/benchmark_model).
set -e
cd "$(dirname "$0")"
BM=${BENCHMARK_MODEL:-/data/local/tmp/benchmark_model}
DEV=${DEVICE_DIR:-/data/local/tmp/aps_latency}
OUT=${1:-results}
mkdir -p "$OUT"
cp manifest.json "$OUT/manifest.json"
adb shell mkdir -p "$DEV"
adb shell getprop ro.product.model > "$OUT/device.txt"
adb shell cat /proc/cpuinfo > "$OUT/cpuinfo.txt"
for f in models/*.tflite; do
  name=$(basename "$f" .tflite)
  if [ -s "$OUT/$name.txt" ]; then continue; fi
  adb push "$f" "$DEV/$name.tflite" > /dev/null
  adb shell "$BM" --graph="$DEV/$name.tflite" --num_threads=@THREADS@ \
      --warmup_runs=@WARMUP@ --num_runs=@RUNS@ > "$OUT/$name.txt.part" 2>&1
  mv "$OUT/$name.txt.part" "$OUT/$name.txt"
  adb shell rm -f "$DEV/$name.tflite"
  echo "$name"
done
"""


def make_manifest(t: topo.Topology, fmt: str, threads: int, runs: int, warmup: int,
                  calibration: int) -> dict:
  """What `import_results` needs besides the outputs: specs, calibration, settings."""
  archs = calibration_archs(t, calibration)
  return {"format": "aps-tf-latency-manifest", "version": table_lib.VERSION,
          "table_format": fmt, "threads": int(threads), "runs": int(runs),
          "warmup": int(warmup), "model": table_lib.model_record(t),
          "specs": {k: s.to_dict() for k, s in table_lib.required_specs(t).items()},
          "calibration": {arch_key(a): {"decisions": list(a), "widths": t.space.widths(a)}
                          for a in archs}}


def script(manifest: dict) -> str:
  return (_SCRIPT.replace("@THREADS@", str(manifest["threads"]))
          .replace("@RUNS@", str(manifest["runs"])).replace("@WARMUP@", str(manifest["warmup"])))


def emit(cfg, out_dir: str, fmt: str = "int8", threads: int = 1, runs: int = 50,
         warmup: int = 5, calibration: int = 3, progress: bool = True) -> dict:
  """Writes every unit and calibration model, the manifest and the adb script
  (rerunning skips the models already written)."""
  measure.export_format(fmt)
  t = topology_of_config(cfg)
  model_dir = os.path.join(out_dir, "models")
  fileio.makedirs(model_dir)
  manifest = make_manifest(t, fmt, threads, runs, warmup, calibration)

  def writer(name, make):
    def run():
      path = os.path.join(model_dir, name + ".tflite")
      if not fileio.exists(path):
        fileio.write_bytes(path, make())
      return True
    return run

  items = {k: writer(k, lambda s=s: measure.spec_content(units_lib.Spec(**s), fmt))
           for k, s in manifest["specs"].items()}
  for k, rec in manifest["calibration"].items():
    items[k] = writer(k, lambda w=rec["widths"]: measure.convert(dense.build(t, w), fmt))
  _measure_all({}, None, items, {}, "models", progress)
  fileio.write_json(os.path.join(out_dir, MANIFEST), manifest, indent=1)
  fileio.write_text(os.path.join(out_dir, SCRIPT), script(manifest))
  if fileio.is_local(out_dir):  # elsewhere: run it with `sh`
    os.chmod(os.path.join(out_dir, SCRIPT), 0o755)
  return manifest


def time_emitted(cfg, models_dir: str, out: str, threads: int = 1, runs: int | None = None,
                 warmup: int | None = None, progress: bool = True,
                 fit: str = "linear") -> dict:
  """Times the models `emit` wrote, on this machine, into the table `out`.

  Converting is most of a build's time and timing a small part: emitting
  first and timing later lets the timing run when the machine is quiet
  (resumes like `build`).
  """
  t = topology_of_config(cfg)
  manifest = _read_manifest(os.path.join(models_dir, MANIFEST), t)
  fmt = manifest["table_format"]
  runs = int(runs or manifest["runs"])
  warmup = int(manifest["warmup"] if warmup is None else warmup)
  tab = _open(out, t, measure.fingerprint(fmt, threads), runs, warmup)

  def timer(key, shape, extra):
    def run():
      content = fileio.read_bytes(os.path.join(models_dir, "models", key + ".tflite"))
      return dict(extra, ms=measure.time_content(content, shape, threads, runs, warmup))
    return run

  specs = {k: timer(k, (s["height"], s["width"], s["c_in"]), {"spec": s})
           for k, s in manifest["specs"].items()}
  _measure_all(tab, out, specs, tab["measurements"], "layers", progress)
  tab.setdefault("calibration", {})
  cal = {k: timer(k, t.input_shape, rec) for k, rec in manifest["calibration"].items()}
  _measure_all(tab, out, cal, tab["calibration"], "calibration", progress)
  finish(t, tab, fit)
  table_lib.validate(tab, out, t)
  table_lib.save(tab, out)
  return tab


def _read_manifest(path: str, t: topo.Topology) -> dict:
  try:
    manifest = fileio.read_json(path)
  except (OSError, json.JSONDecodeError) as e:
    raise table_lib.TableError(f"{path}: cannot read the manifest of `build --emit_models` "
                               f"(run_benchmarks.sh copies it into its results): {e}") from e
  if not isinstance(manifest, dict) or manifest.get("format") != "aps-tf-latency-manifest":
    raise table_lib.TableError(f"{path}: not a latency manifest (written by "
                               "`build --emit_models`)")
  table_lib.check_model({"model": manifest.get("model")}, t, path)
  return manifest


def import_results(cfg, results_dir: str, out: str, fit: str = "linear") -> dict:
  """Assembles a table from `run_benchmarks.sh`'s outputs in `results_dir`."""
  t = topology_of_config(cfg)
  manifest = _read_manifest(os.path.join(results_dir, MANIFEST), t)
  device = benchmark_output.device_fingerprint(results_dir)
  fp = dict(device, threads=manifest["threads"], format=manifest["table_format"],
            date=benchmark_output.results_date(results_dir))
  tab = table_lib.new(t, fp, manifest["runs"], manifest["warmup"])

  def read_ms(key):
    return benchmark_output.parse_file(os.path.join(results_dir, key + ".txt"))

  missing = [k for k in list(manifest["specs"]) + list(manifest["calibration"])
             if not fileio.exists(os.path.join(results_dir, k + ".txt"))]
  if missing:
    raise table_lib.TableError(
        f"{results_dir}: no benchmark_model output for {len(missing)} models (first: "
        f"{missing[0]}.txt); rerun run_benchmarks.sh (it resumes)")
  tab["measurements"] = {k: {"spec": s, "ms": read_ms(k)} for k, s in manifest["specs"].items()}
  tab["calibration"] = {k: dict(rec, ms=read_ms(k))
                        for k, rec in manifest["calibration"].items()}
  finish(t, tab, fit)
  table_lib.validate(tab, out, t)
  table_lib.save(tab, out)
  return tab
