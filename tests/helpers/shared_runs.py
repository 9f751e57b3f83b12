"""Expensive test fixtures built once per pytest session (no tests here).

A trained tiny child and its export cost tens of seconds each; several test
files need them. `cached` builds one under a name in the session's cache
directory (tests/conftest.py makes it and passes it to every pytest-xdist
worker), under a file lock, so whichever process needs it first builds it and
the others wait and reuse it. Tests must not write into a cached directory:
`trained_copy` and `export_copy` give a private copy to tests that do.
Outside pytest (a test file run by itself) the cache is per process.
"""

import fcntl
import json
import os
import shutil
import tempfile
from unittest import mock

from tests.helpers import train_util as util

CACHE_ENV = "APS_TF_TEST_CACHE"
# Epochs of the shared trained child: enough for the export's accuracy and
# int8-agreement checks (> 0.5, >= 0.9) on the embedded digits.
TRAIN_EPOCHS = 3
# Every format but the QAT one (which retrains in a subprocess): its own test.
EXPORT_FORMATS = ("saved_model", "tflite_float32", "tflite_float16", "tflite_dynamic",
                  "tflite_int8")


def cache_root() -> str:
  root = os.environ.get(CACHE_ENV)
  if not root:
    root = os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="aps_tf_test_cache_")
  os.makedirs(root, exist_ok=True)
  return root


def cached(name: str, build) -> str:
  """The directory `name` in the session cache, made by `build(path)` once.

  Args:
    name: the fixture's directory name.
    build: called with an empty directory path to fill, at most once per session.

  Returns:
    The path of the finished directory (read-only by convention).
  """
  final = os.path.join(cache_root(), name)
  done = final + ".done"
  with open(final + ".lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if not os.path.exists(done):
        # Built in place (run files record their absolute paths, e.g. the
        # export manifest's workdir); the marker says the build finished.
        shutil.rmtree(final, ignore_errors=True)
        os.makedirs(final)
        build(final)
        open(done, "w").close()
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return final


def _train(path: str) -> None:
  util.trained_workdir(path, epochs=TRAIN_EPOCHS)


def trained() -> tuple[str, object]:
  """(workdir, cfg) of the shared trained child; do not write into workdir."""
  root = cached("trained", _train)
  return os.path.join(root, "train"), util.tiny_config(TRAIN_EPOCHS)


def trained_copy(dst: str) -> tuple[str, object]:
  """A private copy of the shared trained child's workdir at `dst`/train."""
  workdir, cfg = trained()
  out = os.path.join(dst, "train")
  shutil.copytree(workdir, out)
  return out, cfg


def _export(path: str) -> None:
  from export import exporter  # pylint: disable=g-import-not-at-top
  from export import tflite as tflite_lib  # pylint: disable=g-import-not-at-top
  workdir, _ = trained_copy(path)
  sources, real = [], tflite_lib.convert_saved_model

  def convert_saved_model(saved_model, fmt, representative=None, **kwargs):
    # Which SavedModel each LiteRT file is converted from (its build directory
    # and name), for the test that every file comes from the one SavedModel.
    sources.append((os.path.basename(os.path.dirname(saved_model)),
                    os.path.basename(saved_model), fmt))
    return real(saved_model, fmt, representative, **kwargs)

  with mock.patch.object(tflite_lib, "convert_saved_model", convert_saved_model):
    report = exporter.export(workdir, os.path.join(path, "serving"), "digits",
                             formats=list(EXPORT_FORMATS))
  with open(os.path.join(path, "export.json"), "w") as f:
    json.dump({"report": report, "sources": sources}, f)


def exported() -> dict:
  """The shared export of the trained child (all EXPORT_FORMATS), read-only.

  Returns:
    {"workdir": the trained copy it was exported from (holding its export
    report), "base": the export base (models.config with serving root
    /models), "version_dir": BASE/digits/1, "report": the export's report,
    "sources": (build dir, SavedModel name, format) of each LiteRT conversion}.
  """
  root = cached("exported", _export)
  with open(os.path.join(root, "export.json")) as f:
    record = json.load(f)
  return {"workdir": os.path.join(root, "train"), "base": os.path.join(root, "serving"),
          "version_dir": os.path.join(root, "serving", "digits", "1"),
          "report": record["report"], "sources": [tuple(s) for s in record["sources"]]}
