"""Reading the output of LiteRT's `benchmark_model` tool.

The tool prints (microseconds; older builds omit the percentiles)::

  INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds ...
  INFO: count=9 first=87112 curr=51629 min=51629 max=87112 avg=58147.4 std=11478 p5=... median=51962 p95=...
  INFO: Running benchmark for at least 50 iterations and at least 1 seconds ...
  INFO: count=50 first=52162 curr=49785 min=49088 max=68610 avg=50743.2 std=716 p5=49620 median=49891 p95=52628
  INFO: Inference timings in us: Init: 119515, First inference: 87112, Warmup (avg): 58147.4, Inference (avg): 50743.2

The first statistics line is the warm-up, the last one the timed runs. We
take its median when printed (as the host tables do), else its average.
`render` writes the same format (for tests and dry runs).
"""

from __future__ import annotations

import datetime
import os
import re

import numpy as np

from aps_tf import errors
from aps_tf import fileio

_STATS = re.compile(r"count=(\d+) first=\S+ curr=\S+ min=\S+ max=\S+ avg=(\S+) std=\S+"
                    r"(?: p5=\S+ median=(\S+) p95=\S+)?")
_SUMMARY = re.compile(r"Inference timings in us: .*Inference \(avg\): (\S+)")


class OutputError(errors.UserError, ValueError):
  """A benchmark_model output without timings."""


def parse_ms(text: str, source: str = "<output>") -> float:
  """Median (else average) latency in ms of the timed runs in `text`."""
  stats = _STATS.findall(text)
  if stats:
    _, avg, median = stats[-1]
    return float(median or avg) / 1e3
  m = _SUMMARY.findall(text)
  if m:
    return float(m[-1]) / 1e3
  tail = " | ".join(text.strip().splitlines()[-3:])
  raise OutputError(f"{source}: no benchmark_model timings found (did the run fail? last "
                    f"lines: {tail!r})")


def parse_file(path: str) -> float:
  try:
    text = fileio.read_bytes(path).decode("utf-8", errors="replace")
  except OSError as e:
    raise OutputError(f"{path}: cannot read benchmark output: {e.strerror}") from e
  return parse_ms(text, path)


def render(times_us, warmup_us=None) -> str:
  """A benchmark_model-style output for invocation times `times_us`."""
  def stats(xs):
    xs = np.asarray(xs, np.float64)
    return (f"count={len(xs)} first={int(xs[0])} curr={int(xs[-1])} min={int(xs.min())} "
            f"max={int(xs.max())} avg={xs.mean():g} std={int(xs.std())} "
            f"p5={int(np.percentile(xs, 5))} median={int(np.median(xs))} "
            f"p95={int(np.percentile(xs, 95))}")
  warm = list(warmup_us if warmup_us is not None else times_us[:1])
  return "\n".join([
      "INFO: STARTING!",
      "INFO: Loaded model model.tflite",
      "INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but "
      "terminate if exceeding 150 seconds.",
      "INFO: " + stats(warm), "",
      "INFO: Running benchmark for at least 50 iterations and at least 1 seconds but "
      "terminate if exceeding 150 seconds.",
      "INFO: " + stats(times_us), "",
      f"INFO: Inference timings in us: Init: 1000, First inference: {int(warm[0])}, "
      f"Warmup (avg): {np.mean(warm):g}, Inference (avg): {np.mean(times_us):g}", ""])


def _read(path: str) -> str:
  try:
    return fileio.read_bytes(path).decode("utf-8", errors="replace")
  except OSError:
    return ""


def device_fingerprint(results_dir: str) -> dict:
  """Device, CPU and core count from the files run_benchmarks.sh saves."""
  model = _read(os.path.join(results_dir, "device.txt")).strip() or "unknown phone"
  cpuinfo = _read(os.path.join(results_dir, "cpuinfo.txt"))
  hardware = ""
  for line in cpuinfo.splitlines():
    if line.lower().startswith(("hardware", "model name")) and ":" in line:
      hardware = line.split(":", 1)[1].strip()
      break
  cores = sum(1 for line in cpuinfo.splitlines() if re.match(r"processor\s*:", line))
  return {"device": model, "cpu": hardware or "unknown", "cores": cores or None,
          "runtime": "LiteRT benchmark_model"}


def results_date(results_dir: str) -> str:
  path = os.path.join(results_dir, "device.txt")
  ts = fileio.mtime(path) if fileio.exists(path) else None
  d = (datetime.datetime.fromtimestamp(ts, datetime.timezone.utc) if ts
       else datetime.datetime.now(datetime.timezone.utc))
  return d.isoformat(timespec="seconds")
