"""Export a retrained model for TF-Serving and LiteRT, then verify it.

  python -m export.export_model --workdir=/tmp/quick_train --export_base=/tmp/serving \
      --model_name=aps_digits [--version=N] \
      [--formats=saved_model,tflite_float32,tflite_float16,tflite_dynamic,tflite_int8,tflite_qat_int8]

Builds EXPORT_BASE/MODEL_NAME/VERSION/ atomically (version: max existing + 1
by default; every LiteRT file converted from the one SavedModel) and
EXPORT_BASE/models.config, then runs `python -m export.verify` on it, which
writes export_report.{json,md} (in the version directory and in WORKDIR);
--noverify skips that. Rerunning on the same trained model reuses the version
that holds it (same content hash) unless --version or --force_new_version is
given. Serving and LiteRT: see docs/serving.md.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags

from aps_tf import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Retraining workdir (model.keras, config.json).")
_BASE = flags.DEFINE_string("export_base", None, "Model base directory (TF-Serving root).")
_NAME = flags.DEFINE_string("model_name", None, "Served model name.")
_VERSION = flags.DEFINE_integer("version", None, "Version number (default: max existing + 1).")
_FORCE_NEW = flags.DEFINE_bool(
    "force_new_version", False, "Export a new version even if one holds the same content.")
_FORMATS = flags.DEFINE_list("formats", None, "Formats (default: the config's export.formats).")
_SERVING_ROOT = flags.DEFINE_string(
    "serving_root", "/models", "Directory EXPORT_BASE is mounted at for the model server "
    "(base_path in models.config); /models for the tensorflow/serving docker image.")
_VERIFY = flags.DEFINE_bool("verify", True, "Measure parity and latency after the build "
                            "(python -m export.verify) and write export_report.{json,md}.")
flags.mark_flags_as_required(["workdir", "export_base", "model_name"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  from aps_tf.export import exporter  # pylint: disable=g-import-not-at-top
  from aps_tf.export import verify  # pylint: disable=g-import-not-at-top
  report = exporter.export(_WORKDIR.value, _BASE.value, _NAME.value, _VERSION.value,
                           _FORMATS.value, serving_root=_SERVING_ROOT.value,
                           verify=_VERIFY.value, force_new_version=_FORCE_NEW.value)
  if report.get("reused"):
    print(f"{report['path']} already holds this model (content hash "
          f"{report['content_hash'][:12]}); reused it. --force_new_version exports again.")
    return 0
  if _VERIFY.value:
    print(verify.markdown(report))
  print(f"exported to {report['path']} in {report['export_time_s']}s")
  return 0


if __name__ == "__main__":
  cli.run(main)
