"""What an export version holds, and the retraining workdir it is built from.

The file names of a version directory, the export settings of a config and
the checked loading of a retraining workdir, shared by `export.exporter`
(which builds a version) and `export.verify` (which checks one).
"""

from __future__ import annotations

import json
import os

from aps_tf import archfile
from aps_tf import config_check
from aps_tf import data
from aps_tf import errors
from aps_tf import fileio
from aps_tf import flops as flops_lib
from aps_tf import schema

FORMATS = schema.EXPORT_FORMATS
TMP_PREFIX = ".tmp-"
REPORT_JSON, REPORT_MD = "export_report.json", "export_report.md"
MANIFEST = "export_manifest.json"
MODELS_CONFIG = "models.config"


class ExportError(errors.UserError, ValueError):
  """An export that cannot run; the message says why."""


def setting(cfg, name):
  """The export field `name` of a config read by `load_workdir`.

  Args:
    cfg: a complete config (defaults merged).
    name: a field of the `export` section.

  Returns:
    Its value.
  """
  return cfg.export[name]


def parse_formats(formats) -> tuple[str, ...]:
  """The export formats of a `--formats` value or `export.formats`.

  Args:
    formats: a comma-separated string or a sequence of names.

  Returns:
    The formats, in the given order.

  Raises:
    ExportError: an unknown format, or none.
  """
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
  """Loads a retraining workdir for export, checked.

  Args:
    workdir: the retraining's directory.

  Returns:
    (Keras model, config with defaults merged, arch dict or None).

  Raises:
    ExportError: a missing or unreadable file, or a model that does not match
      the config's data or the architecture file.
  """
  if not fileio.isdir(workdir):
    raise ExportError(f"workdir {workdir!r} does not exist")
  model_path = os.path.join(workdir, "model.keras")
  if not fileio.exists(model_path):
    raise ExportError(f"{model_path} not found: retrain first "
                      f"(python -m aps_tf.train --workdir={workdir} ...)")
  cfg_path = os.path.join(workdir, "config.json")
  try:
    cfg = config_check.with_defaults(fileio.read_json(cfg_path))
  except OSError as e:
    raise ExportError(f"{cfg_path}: cannot read config: {e.strerror}") from e
  except json.JSONDecodeError as e:
    raise ExportError(f"{cfg_path}: not valid JSON: {e.msg}") from e
  try:
    model = fileio.load_keras(model_path, compile=False)
  except Exception as e:  # pylint: disable=broad-except
    raise ExportError(f"{model_path}: cannot load Keras model: {e}") from e
  info = data.dataset_info(cfg.data)
  if tuple(model.input_shape[1:]) != tuple(info.image_shape):
    raise ExportError(f"{model_path} takes {model.input_shape[1:]} but config.json's data "
                      f"gives {info.image_shape}")
  arch = None
  arch_path = os.path.join(workdir, "arch.json")
  if fileio.exists(arch_path):
    arch = archfile.load(arch_path)
    counted = flops_lib.count_keras_model(model)
    if counted["flops"] != arch["flops"]["full"] or counted["params"] != arch["params"]:
      raise ExportError(
          f"{model_path} does not match {arch_path}: the model has {counted['flops']} FLOPs / "
          f"{counted['params']} params, the architecture {arch['flops']['full']} / "
          f"{arch['params']}")
  return model, cfg, arch
