r"""Verify an export: parity and latency of every file, written as a report.

  python -m export.verify --export_dir=EXPORT_BASE/MODEL_NAME/VERSION [--workdir=DIR]

Reads the version directory that `export.export_model` built (its
export_manifest.json names the retraining workdir; --workdir overrides it),
runs every exported file on held-out 'test' images and compares it with the
Keras model (WORKDIR/model.keras): top-1 agreement, max abs difference of the
probabilities, accuracy, and the median single-image latency on this CPU
(1 thread). Writes export_report.{json,md} into the version directory and the
workdir. When the exported arch.json carries a `latency` budget
({"format", "target_ms", "predicted_ms"}), the report puts the measured
latency of that format beside the target and the prediction.
"""

from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from aps_tf import archfile
from aps_tf import cli
from aps_tf import data
from aps_tf import fileio
from aps_tf import flops as flops_lib
from export import layout
from export import tflite as tflite_lib

SAVED_MODEL_LATENCY_RUNS = 20


def load_manifest(export_dir: str) -> dict:
  """The export_manifest.json of a version directory.

  Args:
    export_dir: EXPORT_BASE/MODEL_NAME/VERSION.

  Returns:
    The manifest dict.

  Raises:
    ExportError: the manifest is missing or not JSON.
  """
  path = os.path.join(export_dir, layout.MANIFEST)
  try:
    return fileio.read_json(path)
  except FileNotFoundError:
    raise layout.ExportError(
        f"{path} not found: --export_dir must be a version directory written by "
        "export.export_model (EXPORT_BASE/MODEL_NAME/VERSION)") from None
  except json.JSONDecodeError as e:
    raise layout.ExportError(f"{path}: not valid JSON: {e.msg}") from e


def parity_data(cfg, n: int):
  """Held-out 'test' images the exported files are compared on.

  Args:
    cfg: the retraining config.
    n: how many images.

  Returns:
    (raw uint8 images, preprocessed float32 images, labels).

  Raises:
    ExportError: the test split has fewer than `n` images.
  """
  info = data.dataset_info(cfg.data)
  n = min(int(n), info.split_sizes["test"])
  raw = data.raw_images(cfg.data, "test", n)
  ds = data.build_dataset(cfg.data, "test", n, training=False, repeat=False,
                          drop_remainder=False)
  x, y = next(iter(ds))
  x, y = x.numpy(), y.numpy()
  pre = data.serving_preprocess(cfg.data, tf.constant(raw)).numpy()
  if not np.allclose(pre, x, atol=1e-5):
    raise layout.ExportError(
        "serving_preprocess(raw_images('test')) differs from the 'test' eval pipeline; "
        "serving would not see what the model was evaluated on")
  return raw, x, y


def _saved_model_size(export_dir: str) -> int:
  """Bytes of the SavedModel's own files (not the LiteRT files or reports beside it)."""
  total = 0
  for name in ("saved_model.pb", "fingerprint.pb", "variables", "assets", "assets.extra"):
    path = os.path.join(export_dir, name)
    if fileio.exists(path):
      total += fileio.size(path)
  return total


def _saved_model_result(export_dir, raw, x, y, ref) -> dict:
  loaded = tf.saved_model.load(export_dir)
  serve = loaded.signatures["serving_default"]
  out = serve(images=tf.constant(raw))
  probs = out["probabilities"].numpy()
  pre = loaded.signatures["predict_preprocessed"](images=tf.constant(x))["probabilities"].numpy()
  result = tflite_lib.compare(probs, ref, y)
  result["predict_preprocessed_max_abs_diff"] = float(np.max(np.abs(pre - ref)))
  result["classes_match"] = bool(np.array_equal(out["classes"].numpy(), probs.argmax(-1)))
  one = tf.constant(raw[:1])
  serve(images=one)
  times = []
  for _ in range(SAVED_MODEL_LATENCY_RUNS):
    t = time.perf_counter()
    serve(images=one)
    times.append(time.perf_counter() - t)
  result.update(file=".", size_bytes=_saved_model_size(export_dir),
                latency_ms=float(np.median(times) * 1e3))
  return result


def latency_budget(arch: dict | None, results: list[dict]) -> dict | None:
  """The arch's latency budget with the measured latency of its format.

  Args:
    arch: the exported architecture file, or None.
    results: the per-format results of `verify`.

  Returns:
    {"format", "target_ms", "predicted_ms", "measured_ms"}, or None without a budget.
  """
  budget = (arch or {}).get("latency")
  if not isinstance(budget, dict) or "format" not in budget:
    return None
  fmt = str(budget["format"])
  if fmt not in layout.FORMATS and "tflite_" + fmt in layout.FORMATS:
    fmt = "tflite_" + fmt
  measured = next((r.get("latency_ms") for r in results if r["format"] == fmt), None)
  return {"format": fmt, "target_ms": budget.get("target_ms"),
          "predicted_ms": budget.get("predicted_ms"), "measured_ms": measured}


def markdown(report: dict) -> str:
  """The report as a markdown table (what export_report.md holds).

  Args:
    report: a `verify` report.

  Returns:
    Markdown text.
  """
  lines = [
      f"Model `{report['model_name']}` version {report['version']} "
      f"({report['architecture']}, {report['params']:,} params, "
      f"{report['flops_full']:,} FLOPs), {report['parity_examples']} held-out 'test' images; "
      f"latency: median single-image invoke, 1 thread, this CPU.",
      "",
      "| format | file | size (KiB) | top-1 agreement | max abs diff (prob.) | accuracy | "
      "latency (ms/image) |",
      "|---|---|---:|---:|---:|---:|---:|",
  ]
  for r in report["results"]:
    def num(k, fmt):
      return format(r[k], fmt) if r.get(k) is not None else "-"
    size = f"{r['size_bytes'] / 1024:.1f}" if r.get("size_bytes") else "-"
    lines.append(f"| {r['format']} | {r.get('file', '-')} | {size} | {num('top1_agreement', '.4f')} "
                 f"| {num('max_abs_diff', '.2e')} | {num('accuracy', '.4f')} | "
                 f"{num('latency_ms', '.3f')} |")
  budget = report.get("latency_budget")
  if budget:
    def ms(v):
      return "-" if v is None else f"{float(v):.3f} ms"
    lines += ["", f"Latency budget ({budget['format']}): target {ms(budget['target_ms'])}, "
              f"predicted {ms(budget['predicted_ms'])}, measured {ms(budget['measured_ms'])}"
              + ("" if budget["measured_ms"] is not None else " (format not exported)") + "."]
  return "\n".join(lines) + "\n"


def verify(export_dir: str, workdir: str | None = None, *, model=None, cfg=None,
           write: bool = True) -> dict:
  """Measures every file of EXPORT_DIR against the Keras model.

  Args:
    export_dir: the version directory.
    workdir: the retraining workdir (default: the one the manifest names).
    model: the workdir's Keras model, already loaded (spares loading it again).
    cfg: the workdir's config, already loaded.
    write: write export_report.{json,md} into the version directory and the workdir.

  Returns:
    The report: per format, top-1 agreement, max abs probability difference,
    accuracy, median single-image latency, size.

  Raises:
    ExportError: a missing manifest, file or workdir.
  """
  t0 = time.time()
  manifest = load_manifest(export_dir)
  workdir = workdir or manifest["workdir"]
  if model is None or cfg is None:
    model, cfg, _ = layout.load_workdir(workdir)
  arch_path = os.path.join(export_dir, "arch.json")
  arch = archfile.load(arch_path) if fileio.exists(arch_path) else None
  raw, x, y = parity_data(cfg, layout.setting(cfg, "parity_examples"))
  ref = tf.nn.softmax(model(x, training=False), axis=-1).numpy()
  counted = flops_lib.count_keras_model(model)
  keras_path = os.path.join(workdir, "model.keras")
  results = [{"format": "keras", "file": "model.keras",
              "size_bytes": fileio.size(keras_path) if fileio.exists(keras_path) else None,
              "top1_agreement": 1.0, "max_abs_diff": 0.0,
              "accuracy": float(np.mean(ref.argmax(-1) == y))}]
  files = manifest.get("files", {})
  if "saved_model" in files:
    results.append({"format": "saved_model",
                    **_saved_model_result(export_dir, raw, x, y, ref),
                    "signatures": manifest.get("signatures")})
  for fmt in tflite_lib.FORMATS:
    if fmt not in files:
      continue
    content = fileio.read_bytes(os.path.join(export_dir, files[fmt]))
    r = tflite_lib.evaluate(content, x, ref, y, int(layout.setting(cfg, "latency_runs")))
    if fmt == "tflite_qat_int8" and "qat" in manifest:
      r["qat"] = manifest["qat"]
    results.append({"format": fmt, "file": files[fmt], **r})
  report = {
      "model_name": manifest["model_name"], "version": manifest["version"],
      "workdir": fileio.abspath(workdir),
      "architecture": arch["model"] if arch else model.name,
      "params": counted["params"], "flops_full": counted["flops"],
      "parity_examples": int(len(y)), "formats": manifest["formats"],
      "keras_accuracy": results[0]["accuracy"], "results": results,
      "build_time_s": manifest.get("build_time_s"),
  }
  budget = latency_budget(arch, results)
  if budget:
    report["latency_budget"] = budget
  report["verify_time_s"] = round(time.time() - t0, 2)
  if write:
    md = markdown(report)
    for d in (export_dir, workdir):
      fileio.write_json(os.path.join(d, layout.REPORT_JSON), report, indent=2)
      fileio.write_text(os.path.join(d, layout.REPORT_MD), md)
  return report


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not flags.FLAGS.export_dir:
    raise app.UsageError("--export_dir is required")
  print(markdown(verify(flags.FLAGS.export_dir, flags.FLAGS.workdir)))


if __name__ == "__main__":
  # Flags only in the binary: the exporter imports this module as a library.
  flags.DEFINE_string("export_dir", None,
                      "Version directory of an export (EXPORT_BASE/MODEL_NAME/VERSION).")
  flags.DEFINE_string("workdir", None,
                      "Retraining workdir (default: the one export_manifest.json names).")
  cli.run(main)
