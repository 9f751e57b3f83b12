"""Converting and timing small models on this machine, and its fingerprint.

Every model goes through `export.tflite.convert`, the exporter's own entry
point, so a table is measured under exactly the converter settings the
exported files get. Timing: ai_edge_litert with a fixed thread count,
`warmup` untimed invocations, then the median of `runs` invocations.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform

import numpy as np

from aps_tf import errors
from aps_tf import schema
from aps_tf.latency import units as units_lib

# Table formats (the short names the flags take) -> exporter formats.
FORMATS = schema.LATENCY_FORMATS
CALIBRATION_EXAMPLES = 8


def export_format(fmt: str) -> str:
  if fmt not in FORMATS:
    raise errors.UserError(f"--format={fmt!r}: expected one of {sorted(FORMATS)}")
  return FORMATS[fmt]


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.lower().startswith(("model name", "hardware")):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def runtime_version() -> str:
  try:
    return f"ai-edge-litert {importlib.metadata.version('ai-edge-litert')}"
  except importlib.metadata.PackageNotFoundError:
    return "ai-edge-litert unknown"


def fingerprint(fmt: str, threads: int) -> dict:
  """What a measurement depends on (the date is recorded, not compared)."""
  return {"device": "host", "cpu": cpu_model(), "cores": os.cpu_count(),
          "threads": int(threads), "runtime": runtime_version(), "format": fmt,
          "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _inputs(shape, n: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).standard_normal((n,) + tuple(shape)).astype(np.float32)


def convert(model, fmt: str, seed: int = 0) -> bytes:
  """`export.tflite.convert` with random calibration inputs (int8 needs some;
  shapes are all a table needs, never the dataset)."""
  from export import tflite  # pylint: disable=g-import-not-at-top
  images = _inputs(model.input_shape[1:], CALIBRATION_EXAMPLES, seed)
  return tflite.convert(model, export_format(fmt), tflite.representative_dataset(images))


def time_content(content: bytes, input_shape, threads: int, runs: int, warmup: int) -> float:
  """Median latency (ms) of one invocation of a TFLite file."""
  from export import tflite  # pylint: disable=g-import-not-at-top
  runner = tflite.LiteRTModel(content, num_threads=threads)
  return runner.latency_ms(_inputs(input_shape, 1)[0], runs=runs, warmup=warmup)


def spec_content(s: units_lib.Spec, fmt: str) -> bytes:
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  return convert(units_lib.spec_model(s), fmt)


def time_model(model, fmt: str, threads: int, runs: int, warmup: int) -> float:
  return time_content(convert(model, fmt), model.input_shape[1:], threads, runs, warmup)
