"""Export a retrained dense child: SavedModel for TF-Serving + TFLite, checked.

`export(workdir, export_base, model_name, version, formats)` reads
WORKDIR/model.keras and WORKDIR/config.json (data preprocessing, export
settings) and writes EXPORT_BASE/MODEL_NAME/VERSION/ atomically: everything
is written into a hidden temp directory beside it (`.tmp-VERSION-*`, which
TF-Serving ignores: only all-digit names are versions) and renamed into place
at the end, so a watching model server never sees a half-written version.

Version layout:
  saved_model.pb, variables/, assets.extra/tf_serving_warmup_requests
  tflite/model_float32.tflite, model_float16, model_dynamic, model_int8, model_qat_int8
  export_report.json, export_report.md    (also copied to WORKDIR/)
EXPORT_BASE/models.config lists every model under EXPORT_BASE for
`tensorflow_model_server --model_config_file` (see export/README.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time

from absl import logging
import keras
import ml_collections
import numpy as np
import tensorflow as tf

from aps_tf import archfile
from aps_tf import config_check
from aps_tf import data
from aps_tf import errors
from aps_tf import fileio
from aps_tf import flops as flops_lib
from aps_tf import workdir as workdir_lib
from export import saved_model as saved_model_lib
from export import tflite as tflite_lib

FORMATS = ("saved_model",) + tflite_lib.FORMATS
TMP_PREFIX = ".tmp-"
REPORT_JSON, REPORT_MD = "export_report.json", "export_report.md"
MODELS_CONFIG = "models.config"
# Defaults of the export fields read here (configs/base.py), for config.json
# files written before a field existed.
DEFAULTS = {"formats": FORMATS, "representative_examples": 200, "parity_examples": 200,
            "qat_epochs": 1, "latency_runs": 50}


class ExportError(errors.UserError, ValueError):
  """An export that cannot run; the message says why."""


def _setting(cfg, name):
  value = cfg.get("export", {}).get(name) if "export" in cfg else None
  return DEFAULTS[name] if value is None else value


def parse_formats(formats) -> tuple[str, ...]:
  if isinstance(formats, str):
    formats = [f.strip() for f in formats.split(",") if f.strip()]
  formats = tuple(formats)
  unknown = [f for f in formats if f not in FORMATS]
  if unknown:
    raise ExportError(f"unknown format(s) {unknown}; expected some of {list(FORMATS)}")
  if not formats:
    raise ExportError(f"no formats given; expected some of {list(FORMATS)}")
  return formats


def load_workdir(workdir: str):
  """(Keras model, config, arch dict or None) of a retraining workdir, checked."""
  if not os.path.isdir(workdir):
    raise ExportError(f"workdir {workdir!r} does not exist")
  model_path = os.path.join(workdir, "model.keras")
  if not os.path.exists(model_path):
    raise ExportError(f"{model_path} not found: retrain first "
                      f"(python -m aps_tf.train --workdir={workdir} ...)")
  cfg_path = os.path.join(workdir, "config.json")
  try:
    with open(cfg_path) as f:
      cfg = ml_collections.ConfigDict(json.load(f))
  except OSError as e:
    raise ExportError(f"{cfg_path}: cannot read config: {e.strerror}") from e
  except json.JSONDecodeError as e:
    raise ExportError(f"{cfg_path}: not valid JSON: {e.msg}") from e
  try:
    model = keras.models.load_model(model_path, compile=False)
  except Exception as e:  # pylint: disable=broad-except
    raise ExportError(f"{model_path}: cannot load Keras model: {e}") from e
  info = data.dataset_info(cfg.data)
  if tuple(model.input_shape[1:]) != tuple(info.image_shape):
    raise ExportError(f"{model_path} takes {model.input_shape[1:]} but config.json's data "
                      f"gives {info.image_shape}")
  arch = None
  arch_path = os.path.join(workdir, "arch.json")
  if os.path.exists(arch_path):
    arch = archfile.load(arch_path)
    counted = flops_lib.count_keras_model(model)
    if counted["flops"] != arch["flops"]["full"] or counted["params"] != arch["params"]:
      raise ExportError(
          f"{model_path} does not match {arch_path}: the model has {counted['flops']} FLOPs / "
          f"{counted['params']} params, the architecture {arch['flops']['full']} / "
          f"{arch['params']}")
  return model, cfg, arch


def existing_versions(model_dir: str) -> list[int]:
  if not os.path.isdir(model_dir):
    return []
  return sorted(int(n) for n in os.listdir(model_dir)
                if n.isdigit() and os.path.isdir(os.path.join(model_dir, n)))


def next_version(model_dir: str) -> int:
  versions = existing_versions(model_dir)
  return versions[-1] + 1 if versions else 1


def write_models_config(export_base: str, serving_root: str = "/models") -> str:
  """EXPORT_BASE/models.config (model_config_list) naming every exported model.

  base_path is `serving_root/NAME`: the docker image mounts EXPORT_BASE at
  /models; pass serving_root=EXPORT_BASE for a local tensorflow_model_server.
  """
  names = sorted(n for n in os.listdir(export_base)
                 if not n.startswith(".") and existing_versions(os.path.join(export_base, n)))
  entries = "".join(
      f"  config {{\n    name: \"{n}\"\n    base_path: \"{serving_root.rstrip('/')}/{n}\"\n"
      f"    model_platform: \"tensorflow\"\n    model_version_policy {{ latest {{ num_versions: 1 }} }}\n"
      f"  }}\n" for n in names)
  text = f"model_config_list {{\n{entries}}}\n"
  path = os.path.join(export_base, MODELS_CONFIG)
  fileio.write_text(path, text)
  return path


def _parity_data(cfg, n: int):
  """Held-out 'test' images: raw uint8, preprocessed float32, labels."""
  info = data.dataset_info(cfg.data)
  n = min(int(n), info.split_sizes["test"])
  raw = data.raw_images(cfg.data, "test", n)
  ds = data.build_dataset(cfg.data, "test", n, training=False, repeat=False,
                          drop_remainder=False)
  x, y = next(iter(ds))
  x, y = x.numpy(), y.numpy()
  pre = data.serving_preprocess(cfg.data, tf.constant(raw)).numpy()
  if not np.allclose(pre, x, atol=1e-5):
    raise ExportError("serving_preprocess(raw_images('test')) differs from the 'test' eval "
                      "pipeline; serving would not see what the model was evaluated on")
  return raw, x, y


def _markdown(report: dict) -> str:
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
  return "\n".join(lines) + "\n"


def _dir_size(path: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def _saved_model_step(model, cfg, tmp, model_name, raw, x, y, ref) -> dict:
  sig = saved_model_lib.export(model, cfg.data, tmp, model_name, warmup_images=raw[:8])
  loaded = tf.saved_model.load(tmp)
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
  for _ in range(20):
    t = time.perf_counter()
    serve(images=one)
    times.append(time.perf_counter() - t)
  result.update(file=".", size_bytes=_dir_size(tmp), latency_ms=float(np.median(times) * 1e3),
                signatures=sig)
  return result


def content_hash(model, cfg, formats) -> str:
  """What an export's files are a function of: the model (architecture and
  weights), the config's data and export sections, and the formats."""
  h = hashlib.sha256()
  spec = {"model": model.get_config(), "formats": sorted(formats),
          "data": cfg.get("data", {}).to_dict() if "data" in cfg else {},
          "export": cfg.get("export", {}).to_dict() if "export" in cfg else {}}
  h.update(json.dumps(spec, sort_keys=True, default=str).encode())
  for w in model.get_weights():
    h.update(str((w.dtype, w.shape)).encode())
    h.update(np.ascontiguousarray(w).tobytes())
  return h.hexdigest()


def find_version(model_dir: str, digest: str) -> dict | None:
  """The report of the newest version under model_dir with this content hash."""
  for v in reversed(existing_versions(model_dir)):
    path = os.path.join(model_dir, str(v), REPORT_JSON)
    try:
      with open(path) as f:
        report = json.load(f)
    except (OSError, ValueError):
      continue
    if report.get("content_hash") == digest:
      return report
  return None


def export(workdir: str, export_base: str, model_name: str, version: int | None = None,
           formats=None, serving_root: str = "/models", force_new_version: bool = False) -> dict:
  """Runs the export; returns the report (also written as JSON + markdown).

  Idempotent: without `version` or `force_new_version`, a version that already
  holds this content (see `content_hash`) is reused (report["reused"] = True).
  """
  if not model_name or not re.fullmatch(r"[A-Za-z0-9_.-]+", model_name) or model_name[0] == ".":
    raise ExportError(f"model_name {model_name!r}: use letters, digits, '_', '-', '.'")
  if version is not None and int(version) < 1:
    raise ExportError(f"version must be a positive integer, got {version}")
  if formats is not None:
    formats = parse_formats(formats)
  model, cfg, arch = load_workdir(workdir)
  formats = parse_formats(formats if formats is not None else _setting(cfg, "formats"))
  config_check.check_export(cfg)
  config_check.check_data_prepared(cfg.data)
  model_dir = os.path.join(export_base, model_name)
  digest = content_hash(model, cfg, formats)
  if version is None and not force_new_version:
    previous = find_version(model_dir, digest)
    if previous is not None:
      previous.update(reused=True, path=os.path.join(model_dir, str(previous["version"])))
      return previous
  version = int(version) if version is not None else next_version(model_dir)
  final = os.path.join(model_dir, str(version))
  if os.path.exists(final):
    raise ExportError(f"{final} already exists; versions are immutable, pick another --version")
  workdir_lib.ensure_writable(model_dir)
  workdir_lib.ensure_writable(workdir)  # export_report.{json,md} are copied there
  os.makedirs(model_dir, exist_ok=True)

  t0 = time.time()
  raw, x, y = _parity_data(cfg, _setting(cfg, "parity_examples"))
  ref = tf.nn.softmax(model(x, training=False), axis=-1).numpy()
  counted = flops_lib.count_keras_model(model)
  report = {
      "model_name": model_name, "version": version, "workdir": os.path.abspath(workdir),
      "content_hash": digest,
      "architecture": arch["model"] if arch else model.name,
      "params": counted["params"], "flops_full": counted["flops"],
      "parity_examples": int(len(y)), "formats": list(formats),
      "keras_accuracy": float(np.mean(ref.argmax(-1) == y)),
      "results": [{"format": "keras", "file": "model.keras",
                   "size_bytes": os.path.getsize(os.path.join(workdir, "model.keras")),
                   "top1_agreement": 1.0, "max_abs_diff": 0.0,
                   "accuracy": float(np.mean(ref.argmax(-1) == y))}],
  }
  tmp = tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{version}-", dir=model_dir)
  try:
    sm_dir = os.path.join(tmp, "sm")  # ExportArchive wants a fresh directory
    if "saved_model" in formats:
      logging.info("SavedModel")
      r = _saved_model_step(model, cfg, sm_dir, model_name, raw, x, y, ref)
      for name in os.listdir(sm_dir):
        os.rename(os.path.join(sm_dir, name), os.path.join(tmp, name))
      os.rmdir(sm_dir)
      report["results"].append({"format": "saved_model", **r})
    tfl = [f for f in formats if f.startswith("tflite_")]
    if tfl:
      os.makedirs(os.path.join(tmp, "tflite"))
      rep = None
      if "tflite_int8" in tfl:
        rep_raw = data.raw_images(cfg.data, "full_train",
                                  int(_setting(cfg, "representative_examples")))
        rep = data.serving_preprocess(cfg.data, tf.constant(rep_raw)).numpy()
    for fmt in tfl:
      logging.info("TFLite %s", fmt)
      path = os.path.join(tmp, "tflite", tflite_lib.FILENAMES[fmt])
      extra = {}
      if fmt == "tflite_qat_int8":
        from export import qat  # pylint: disable=g-import-not-at-top
        extra = {"qat": qat.run_subprocess(workdir, path)}
        with open(path, "rb") as f:
          content = f.read()
      else:
        content = tflite_lib.convert(
            model, fmt, tflite_lib.representative_dataset(rep) if rep is not None else None)
        with open(path, "wb") as f:
          f.write(content)
      r = tflite_lib.evaluate(content, x, ref, y, int(_setting(cfg, "latency_runs")))
      report["results"].append({"format": fmt, "file": os.path.join("tflite",
                                                                    tflite_lib.FILENAMES[fmt]),
                                **r, **extra})
    report["export_time_s"] = round(time.time() - t0, 2)
    text = json.dumps(report, indent=2) + "\n"
    with open(os.path.join(tmp, REPORT_JSON), "w") as f:
      f.write(text)
    md = _markdown(report)
    with open(os.path.join(tmp, REPORT_MD), "w") as f:
      f.write(md)
    try:
      os.rename(tmp, final)
    except OSError as e:
      raise ExportError(f"{final} appeared while exporting (another exporter?): {e}") from e
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  for name, content in ((REPORT_JSON, text), (REPORT_MD, md)):
    with open(os.path.join(workdir, name), "w") as f:
      f.write(content)
  if "saved_model" in formats:
    report["models_config"] = write_models_config(export_base, serving_root)
  report["path"] = final
  return report
