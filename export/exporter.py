"""Build an export from a retrained dense child: one SavedModel, every LiteRT file.

`export(workdir, export_base, model_name, version, formats)` reads
WORKDIR/model.keras, config.json and arch.json, and builds
EXPORT_BASE/MODEL_NAME/VERSION/ atomically: everything is written into a
hidden temp directory beside it (`.tmp-VERSION-*`, which TF-Serving ignores:
only all-digit names are versions) and renamed into place at the end, so a
watching model server never sees a half-written version. Any filesystem
(aps_tf.fileio): on gs:// or ram:// "renamed" is a copy with saved_model.pb
last, then a delete.

Build: the SavedModel (serving signatures + the batch-1 `litert` signature)
is written first and every LiteRT format is converted from it by
`export.tflite.convert_saved_model`; QAT int8 is converted the same way from
the fine-tuned fake-quant SavedModel that `export.qat` writes. Verify: then
`export.verify` (unless verify=False) measures parity and latency of every
file against the Keras model and writes export_report.{json,md}.

Version layout:
  saved_model.pb, variables/, assets.extra/tf_serving_warmup_requests
    (kept when 'saved_model' is among the formats)
  tflite/model_float32.tflite, model_float16, model_dynamic, model_int8, model_qat_int8
  arch.json (copy), export_manifest.json (what was built, from where)
  export_report.json, export_report.md    (by verify; also copied to WORKDIR/)
EXPORT_BASE/models.config lists every model under EXPORT_BASE for
`tensorflow_model_server --model_config_file` (see docs/serving.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time

from absl import logging
import numpy as np
import tensorflow as tf

from aps_tf import archfile
from aps_tf import config_check
from aps_tf import data
from aps_tf import fileio
from aps_tf import workdir as workdir_lib
from aps_tf.export import layout
from aps_tf.export import litert_metadata
from aps_tf.export import saved_model as saved_model_lib
from aps_tf.export import tflite as tflite_lib
from aps_tf.export import verify as verify_lib

FORMATS = layout.FORMATS
MANIFEST, MODELS_CONFIG = layout.MANIFEST, layout.MODELS_CONFIG
REPORT_JSON, REPORT_MD = layout.REPORT_JSON, layout.REPORT_MD
TMP_PREFIX = layout.TMP_PREFIX
ExportError = layout.ExportError
setting, parse_formats, load_workdir = layout.setting, layout.parse_formats, layout.load_workdir


def existing_versions(model_dir: str) -> list[int]:
  """The version numbers under MODEL_DIR (all-digit directory names), sorted.

  Args:
    model_dir: EXPORT_BASE/MODEL_NAME.

  Returns:
    The versions, ascending; empty if there are none.
  """
  return sorted(int(n) for n in fileio.listdir(model_dir)
                if n.isdigit() and fileio.isdir(os.path.join(model_dir, n)))


def next_version(model_dir: str) -> int:
  """One more than the newest version under MODEL_DIR (1 for none).

  Args:
    model_dir: EXPORT_BASE/MODEL_NAME.

  Returns:
    The version number a new export takes.
  """
  versions = existing_versions(model_dir)
  return versions[-1] + 1 if versions else 1


def models_config(names, serving_root: str = "/models"):
  """A ModelServerConfig (tensorflow-serving-api protos) serving NAMES' latest version.

  Args:
    names: the model names.
    serving_root: the directory the model server sees EXPORT_BASE as.

  Returns:
    The `ModelServerConfig` proto.
  """
  from tensorflow_serving.config import file_system_storage_path_source_pb2 as fs_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.config import model_server_config_pb2 as config_pb2  # pylint: disable=g-import-not-at-top
  policy = fs_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy(
      latest=fs_pb2.FileSystemStoragePathSourceConfig.ServableVersionPolicy.Latest(
          num_versions=1))
  return config_pb2.ModelServerConfig(model_config_list=config_pb2.ModelConfigList(config=[
      config_pb2.ModelConfig(name=n, base_path=f"{serving_root.rstrip('/')}/{n}",
                             model_platform="tensorflow", model_version_policy=policy)
      for n in names]))


def write_models_config(export_base: str, serving_root: str = "/models") -> str:
  """EXPORT_BASE/models.config (text-format ModelServerConfig) naming every model.

  base_path is `serving_root/NAME`: the docker image mounts EXPORT_BASE at
  /models; pass serving_root=EXPORT_BASE for a local tensorflow_model_server.

  Args:
    export_base: the directory holding one directory per model.
    serving_root: the model server's view of `export_base`.

  Returns:
    The path written.
  """
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  names = sorted(n for n in fileio.listdir(export_base)
                 if not n.startswith(".") and existing_versions(os.path.join(export_base, n)))
  path = os.path.join(export_base, MODELS_CONFIG)
  fileio.write_text(path, text_format.MessageToString(models_config(names, serving_root)))
  return path


def representative_images(cfg) -> np.ndarray:
  """Preprocessed 'full_train' images that calibrate the int8 formats.

  Args:
    cfg: the retraining config.

  Returns:
    `[export.representative_examples, H, W, C]` float32.
  """
  raw = data.raw_images(cfg.data, "full_train", int(setting(cfg, "representative_examples")))
  return data.serving_preprocess(cfg.data, tf.constant(raw)).numpy()


def _build(model, cfg, arch, workdir, tmp, model_name, formats) -> dict:
  """Writes every format into TMP; returns the manifest."""
  manifest = {"model_name": model_name, "workdir": fileio.abspath(workdir),
              "formats": list(formats), "files": {},
              # What a client does to a raw image before `predict_preprocessed`
              # and every LiteRT file (serving_default does it in-graph).
              "preprocessing": data.preprocessing_record(cfg.data)}
  sm_dir = os.path.join(tmp, "saved_model")  # ExportArchive wants a fresh directory
  logging.info("SavedModel")
  manifest["signatures"] = saved_model_lib.export(
      model, cfg.data, sm_dir, model_name, warmup_images=data.raw_images(cfg.data, "test", 8))
  tfl = [f for f in formats if f.startswith("tflite_")]
  if tfl:
    # The LiteRT metadata's fields beside the data's own record (which wins
    # where both say something: its mean/std are the normalisation applied).
    manifest["preprocessing"] = dict(litert_metadata.preprocessing(
        data.dataset_info(cfg.data), int(cfg.data.image_size), data.serving_resize(cfg.data),
        data.label_names(cfg.data)), **manifest["preprocessing"])
    manifest["litert_inputs"] = {}
  rep = None
  if any(f in tflite_lib.INT8_IO for f in tfl):
    rep = tflite_lib.representative_dataset(representative_images(cfg))
  if tfl:
    fileio.makedirs(os.path.join(tmp, "tflite"))
  for fmt in tfl:
    logging.info("LiteRT %s", fmt)
    source = sm_dir
    if fmt == "tflite_qat_int8":
      from aps_tf.export import qat  # pylint: disable=g-import-not-at-top
      source = os.path.join(tmp, "qat_saved_model")
      manifest["qat"] = qat.run_subprocess(workdir, source)
    content = tflite_lib.convert_saved_model(source, fmt, rep)
    if source != sm_dir:
      fileio.rmtree(source)
    inputs = litert_metadata.input_record(tflite_lib.LiteRTModel(content).inp)
    content = litert_metadata.write(content, dict(manifest["preprocessing"], **inputs),
                                    model_name)
    manifest["litert_inputs"][fmt] = inputs
    rel = os.path.join("tflite", tflite_lib.FILENAMES[fmt])
    fileio.write_bytes(os.path.join(tmp, rel), content)
    manifest["files"][fmt] = rel
  if "saved_model" in formats:
    for name in fileio.listdir(sm_dir):
      fileio.move(os.path.join(sm_dir, name), os.path.join(tmp, name))
    manifest["files"]["saved_model"] = "."
  fileio.rmtree(sm_dir)
  if arch is not None:
    archfile.save(arch, os.path.join(tmp, "arch.json"))
  return manifest


def content_hash(model, cfg, formats) -> str:
  """What an export's files are a function of.

  Args:
    model: the Keras model (architecture and weights).
    cfg: the config; its data and export sections count.
    formats: the exported formats.

  Returns:
    A hex SHA-256 digest.
  """
  h = hashlib.sha256()
  spec = {"model": model.get_config(), "formats": sorted(formats),
          "data": cfg.data.to_dict(), "export": cfg.export.to_dict()}
  h.update(json.dumps(spec, sort_keys=True, default=str).encode())
  for w in model.get_weights():
    h.update(str((w.dtype, w.shape)).encode())
    h.update(np.ascontiguousarray(w).tobytes())
  return h.hexdigest()


def find_version(model_dir: str, digest: str) -> dict | None:
  """The newest version under MODEL_DIR built from this content.

  Args:
    model_dir: EXPORT_BASE/MODEL_NAME.
    digest: a `content_hash`.

  Returns:
    Its report (or manifest, when it was not verified), else None.
  """
  for v in reversed(existing_versions(model_dir)):
    vdir = os.path.join(model_dir, str(v))
    try:
      manifest = fileio.read_json(os.path.join(vdir, MANIFEST))
    except (OSError, ValueError):
      continue
    if manifest.get("content_hash") != digest:
      continue
    try:
      return fileio.read_json(os.path.join(vdir, REPORT_JSON))
    except (OSError, ValueError):
      return manifest
  return None


def export(workdir: str, export_base: str, model_name: str, version: int | None = None,
           formats=None, serving_root: str = "/models", verify: bool = True,
           force_new_version: bool = False) -> dict:
  """Builds the export, then (verify=True) verifies it.

  Idempotent: without `version` or `force_new_version`, a version that already
  holds this content (see `content_hash`) is reused (report["reused"] = True).

  Args:
    workdir: a retraining workdir (model.keras, config.json, arch.json).
    export_base: the model server's base directory.
    model_name: the served name (letters, digits, '_', '-', '.').
    version: the version to write (default: the next one); versions are immutable.
    formats: some of `FORMATS` (default: the config's `export.formats`).
    serving_root: the model server's view of `export_base` (models.config).
    verify: measure parity and latency of every file before publishing.
    force_new_version: build even if a version holds this content.

  Returns:
    The report of `export.verify.verify` (also written as JSON + markdown), or
    the build manifest when verify=False; both with `path` (the version
    directory) and `models_config` when a SavedModel was exported.

  Raises:
    ExportError: a bad name, version or format, a missing or inconsistent
      workdir, or a version that exists.
  """
  if not model_name or not re.fullmatch(r"[A-Za-z0-9_.-]+", model_name) or model_name[0] == ".":
    raise ExportError(f"model_name {model_name!r}: use letters, digits, '_', '-', '.'")
  if version is not None and int(version) < 1:
    raise ExportError(f"version must be a positive integer, got {version}")
  if formats is not None:
    formats = parse_formats(formats)
  model, cfg, arch = load_workdir(workdir)
  formats = parse_formats(formats if formats is not None else setting(cfg, "formats"))
  config_check.check_export(cfg)
  data.check_prepared(cfg.data)
  if "tflite_qat_int8" in formats and arch is None:
    raise ExportError(f"{os.path.join(workdir, 'arch.json')} not found: tflite_qat_int8 "
                      "builds the child from its architecture")
  model_dir = os.path.join(export_base, model_name)
  digest = content_hash(model, cfg, formats)
  if version is None and not force_new_version:
    previous = find_version(model_dir, digest)
    if previous is not None:
      previous.update(reused=True, content_hash=digest,
                      path=os.path.join(model_dir, str(previous["version"])))
      return previous
  version = int(version) if version is not None else next_version(model_dir)
  final = os.path.join(model_dir, str(version))
  if fileio.exists(final):
    raise ExportError(f"{final} already exists; versions are immutable, pick another --version")
  workdir_lib.ensure_writable(model_dir)
  workdir_lib.ensure_writable(workdir)  # export_report.{json,md} are copied there

  t0 = time.time()
  tmp = fileio.make_temp_dir(model_dir, prefix=f"{TMP_PREFIX}{version}-")
  try:
    manifest = _build(model, cfg, arch, workdir, tmp, model_name, formats)
    manifest.update(version=version, content_hash=digest,
                    build_time_s=round(time.time() - t0, 2))
    fileio.write_json(os.path.join(tmp, MANIFEST), manifest, indent=2)
    # Verified before it is published, so a model server (or a rerun) never
    # sees a version without its report.
    if verify:
      report = verify_lib.verify(tmp, workdir, model=model, cfg=cfg)
    else:
      report = dict(manifest)
    try:
      fileio.publish_dir(tmp, final)
    except (OSError, tf.errors.OpError) as e:
      raise ExportError(f"{final} appeared while exporting (another exporter?): {e}") from e
  except BaseException:
    fileio.rmtree(tmp, ignore_errors=True)
    raise
  report["export_time_s"] = round(time.time() - t0, 2)
  if "saved_model" in formats:
    report["models_config"] = write_models_config(export_base, serving_root)
  report["path"] = final
  return report
