r"""The latency table binary: build, import, validate.

  python -m aps_tf.latency build --config=configs/quick_latency.py \
      --out=tables/quick_int8.json --format=int8 --threads=1 --runs=50
  python -m aps_tf.latency build --config=FILE --emit_models=DIR      # for a phone
  python -m aps_tf.latency build --config=FILE --import=DIR/results --out=TABLE.json
  python -m aps_tf.latency build --config=FILE --from_models=DIR --out=TABLE.json  # time here
  python -m aps_tf.latency validate --config=FILE --table=TABLE.json --n=30 \
      [--plot=scatter.png] [--json]

`build` resumes an interrupted table at --out (same fingerprint only). Only
the config's shapes are used, never its dataset.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from ml_collections import config_flags

from aps_tf import cli

COMMANDS = ("build", "validate")
_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/NAME.py).")
_OUT = flags.DEFINE_string("out", None, "build: the table file to write (resumes; default: "
                           "the config's search.reward.latency_table).")
_FORMAT = flags.DEFINE_string("format", None, "build: float32 | float16 | dynamic | int8 "
                              "(default: the config's search.reward.latency_format).")
_THREADS = flags.DEFINE_integer("threads", 1, "build: LiteRT threads.")
_RUNS = flags.DEFINE_integer("runs", 50, "build: timed invocations (median).")
_WARMUP = flags.DEFINE_integer("warmup", 5, "build: untimed invocations first.")
_CALIBRATION = flags.DEFINE_integer(
    "calibration", 3, "build: whole models timed to fit the constant (>= 1).")
_FIT = flags.DEFINE_enum("fit", "linear", ["constant", "linear"],
                         "build: how entries meet the calibration models: a constant, "
                         "or a scale and a constant.")
_EMIT = flags.DEFINE_string("emit_models", None,
                            "build: write the .tflite files, manifest and adb script here "
                            "instead of measuring.")
_IMPORT = flags.DEFINE_string("import", None,
                              "build: assemble --out from run_benchmarks.sh results here.")
_FROM_MODELS = flags.DEFINE_string(
    "from_models", None, "build: time the models an earlier --emit_models wrote to this "
    "directory, on this machine (convert any time, time when the machine is quiet).")
_TABLE = flags.DEFINE_string("table", None, "validate: the table to check.")
_N = flags.DEFINE_integer("n", 30, "validate: dense children to measure (a third at uniform "
                         "width multipliers, the rest stratified random).")
_SEED = flags.DEFINE_integer("seed", 1, "validate: seed of the random children.")
_PLOT = flags.DEFINE_string("plot", None, "validate: scatter PNG (default: beside the table).")
_MODELS_DIR = flags.DEFINE_string(
    "models_dir", None, "validate: cache of the converted children (default: beside the "
    "table); a rerun reuses them.")
_CONVERT_ONLY = flags.DEFINE_bool("convert_only", False,
                                  "validate: only convert the children into --models_dir.")
_MIN_ROUNDS = flags.DEFINE_integer("min_rounds", 3, "validate: timing rounds every child gets.")
_MAX_ROUNDS = flags.DEFINE_integer(
    "max_rounds", 15, "validate: timing rounds at most; a child is timed again until its noise "
    "is below half the gap to its nearest neighbour (or --noise_floor of its latency).")
_NOISE_FLOOR = flags.DEFINE_float("noise_floor", 0.005, "validate: relative noise below which "
                                  "a child needs no more rounds.")
_RESULT = flags.DEFINE_string("result", None, "validate: write the whole result, one row per "
                              "child, as JSON to this file.")
_JSON = flags.DEFINE_bool("json", False, "validate: end with one JSON object.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Console progress bar.")


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"usage: python -m aps_tf.latency {{{'|'.join(COMMANDS)}}} "
                         "--config=FILE ...")
  if _CONFIG.value is None:
    raise app.UsageError("--config is required")
  from aps_tf.latency import build as build_lib  # pylint: disable=g-import-not-at-top
  cfg = _CONFIG.value
  if argv[1] == "build":
    reward = cfg.search.reward
    fmt = _FORMAT.value or reward.get("latency_format") or "int8"
    out = _OUT.value
    if not out and reward.kind == "latency":
      out = reward.get("latency_table")
    if _EMIT.value:
      m = build_lib.emit(cfg, _EMIT.value, fmt, _THREADS.value, _RUNS.value,
                         _WARMUP.value, _CALIBRATION.value, _PROGRESS.value)
      print(f"wrote {len(m['specs']) + len(m['calibration'])} models, "
            f"{build_lib.MANIFEST} and {build_lib.SCRIPT} to {_EMIT.value}")
      return
    if not out:
      if _OUT.value is None and reward.kind != "latency":
        print(f"search.reward.kind={reward.kind!r}: this config needs no latency table")
        return
      raise app.UsageError("build needs --out=TABLE.json (or --emit_models=DIR)")
    if flags.FLAGS["import"].value:
      tab = build_lib.import_results(cfg, flags.FLAGS["import"].value, out, _FIT.value)
    elif _FROM_MODELS.value:
      tab = build_lib.time_emitted(cfg, _FROM_MODELS.value, out, _THREADS.value,
                                   _RUNS.value if _RUNS.present else None,
                                   _WARMUP.value if _WARMUP.present else None,
                                   _PROGRESS.value, _FIT.value)
    else:
      tab = build_lib.build(cfg, out, fmt, _THREADS.value, _RUNS.value,
                            _WARMUP.value, _CALIBRATION.value, _PROGRESS.value,
                            fit=_FIT.value)
    print(f"{out}: {len(tab['layers'])} layers, {len(tab['measurements'])} "
          f"measurements, const {tab['const_ms']:.4f} ms ({tab['fingerprint']['format']}, "
          f"{tab['fingerprint']['threads']} threads, {tab['fingerprint']['cpu']})")
    return
  if not _TABLE.value:
    raise app.UsageError("validate needs --table=TABLE.json")
  from aps_tf.latency import validate as validate_lib  # pylint: disable=g-import-not-at-top
  plot = _PLOT.value or os.path.splitext(_TABLE.value)[0] + "_validation.png"
  models_dir = _MODELS_DIR.value or os.path.splitext(_TABLE.value)[0] + "_validation_models"
  r = validate_lib.validate(cfg, _TABLE.value, _N.value, _SEED.value, plot, _PROGRESS.value,
                            models_dir, _CONVERT_ONLY.value,
                            _FORMAT.value or cfg.search.reward.get("latency_format") or "int8",
                            _MIN_ROUNDS.value, _MAX_ROUNDS.value, _NOISE_FLOOR.value)
  if _CONVERT_ONLY.value:
    print(f"converted {r['n']} children into {models_dir}")
    return
  print(f"{r['model']} {tuple(r['input_shape'])} {r['format']} threads={r['threads']} "
        f"n={r['n']}: Spearman {r['spearman']:.3f}, Kendall {r['kendall_tau']:.3f}, median "
        f"rel. error {100 * r['median_rel_error']:.1f}%, max {100 * r['max_rel_error']:.1f}%; "
        f"measured {r['measured_min_ms']:.3f}-{r['measured_max_ms']:.3f} ms, median noise "
        f"{100 * r['median_noise_rel']:.2f}%, {100 * r['resolved_fraction']:.0f}% resolved; "
        f"plot {plot}")
  if _RESULT.value:
    from aps_tf import fileio  # pylint: disable=g-import-not-at-top
    fileio.write_json(_RESULT.value, r, indent=1)
  if _JSON.value:
    print(json.dumps({k: v for k, v in r.items() if k != "rows"}))


if __name__ == "__main__":
  cli.run(main)
