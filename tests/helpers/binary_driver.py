"""Runs binaries' `main`s in one process, case after case, as their command
lines would (through `aps_tf.cli.run`), recording exit code and stderr.

  python -m tests.helpers.binary_driver CASES.json RESULTS.json

CASES.json: a list of {"name", "module", "argv", optional "fail_writes":
"EROFS"|"ENOSPC", "under": DIR}. With `fail_writes`, every write under DIR
(Python's and tf.io.gfile's) fails with that errno, as on a read-only or full
file system (ENOSPC still lets an unnamed O_TMPFILE be created, as a full disk
does). Each module's
flags are removed before the next module is imported, so binaries with the
same flag names run in one process (one TensorFlow import for all cases).
"""

import builtins
import contextlib
import errno
import importlib
import json
import os
import sys
import tempfile
import traceback
from unittest import mock

from absl import flags

from aps_tf import cli

FLAGS = flags.FLAGS


def _under(path, root) -> bool:
  try:
    path = os.path.abspath(os.fspath(path))
  except TypeError:
    return False
  return path == root or path.startswith(root + os.sep)


@contextlib.contextmanager
def failing_writes(code: str, root: str):
  """Every write below `root` raises OSError(code)."""
  err = getattr(errno, code)
  root = os.path.abspath(root)
  real_open, real_os_open = builtins.open, os.open
  real_mkdir, real_replace, real_rename = os.mkdir, os.replace, os.rename

  def fail(path):
    raise OSError(err, os.strerror(err), os.fspath(path))

  def open_(file, mode="r", *a, **k):
    if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and \
        _under(file, root):
      fail(file)
    return real_open(file, mode, *a, **k)

  def os_open(path, flags_, *a, **k):
    writes = flags_ & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
    tmpfile = getattr(os, "O_TMPFILE", 0) and (flags_ & os.O_TMPFILE) == os.O_TMPFILE
    if writes and _under(path, root) and not (tmpfile and code == "ENOSPC"):
      fail(path)
    return real_os_open(path, flags_, *a, **k)

  def mkdir(path, *a, **k):
    if _under(path, root):
      fail(path)
    return real_mkdir(path, *a, **k)

  def replace(src, dst, *a, **k):
    if _under(dst, root):
      fail(dst)
    return real_replace(src, dst, *a, **k)

  def rename(src, dst, *a, **k):
    if _under(dst, root):
      fail(dst)
    return real_rename(src, dst, *a, **k)

  # tf.io.gfile (aps_tf.fileio) writes in C++, past the patches above: fail
  # its writes as TensorFlow's local filesystem reports them ("PATH; STRERROR").
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  gfile = tf.io.gfile
  real_gfile, real_makedirs = gfile.GFile, gfile.makedirs
  real_grename, real_gcopy = gfile.rename, gfile.copy
  tf_error = (tf.errors.ResourceExhaustedError if code in ("ENOSPC", "EDQUOT")
              else tf.errors.PermissionDeniedError)

  def tf_fail(path):
    raise tf_error(None, None, f"{os.fspath(path)}; {os.strerror(err)}")

  def gfile_(name, mode="r"):
    if any(c in mode for c in "wa") and _under(name, root):
      tf_fail(name)
    return real_gfile(name, mode)

  def gmakedirs(path):
    if _under(path, root) and not os.path.isdir(path):
      tf_fail(path)
    return real_makedirs(path)

  def grename(src, dst, overwrite=False):
    if _under(dst, root):
      tf_fail(dst)
    return real_grename(src, dst, overwrite=overwrite)

  def gcopy(src, dst, overwrite=False):
    if _under(dst, root):
      tf_fail(dst)
    return real_gcopy(src, dst, overwrite=overwrite)

  with mock.patch.object(builtins, "open", open_), mock.patch.object(os, "open", os_open), \
      mock.patch.object(os, "mkdir", mkdir), mock.patch.object(os, "replace", replace), \
      mock.patch.object(os, "rename", rename), mock.patch.object(gfile, "GFile", gfile_), \
      mock.patch.object(gfile, "makedirs", gmakedirs), \
      mock.patch.object(gfile, "rename", grename), mock.patch.object(gfile, "copy", gcopy):
    yield


@contextlib.contextmanager
def captured_stderr():
  """Everything written to file descriptor 2 (Python, absl, TF C++) goes to a buffer."""
  out = {}
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as f:
    os.dup2(f.fileno(), 2)
    try:
      yield out
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      f.seek(0)
      out["text"] = f.read().decode(errors="replace")


def run_case(module, case: dict) -> dict:
  FLAGS.unparse_flags()
  sys.argv = [case["module"]] + list(case["argv"])
  guard = (failing_writes(case["fail_writes"], case["under"]) if case.get("fail_writes")
           else contextlib.nullcontext())
  code = None
  with captured_stderr() as err:
    with guard:
      try:
        cli.run(module.main)
      except SystemExit as e:
        code = e.code
      except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
        code = "uncaught"
  return {"code": code, "stderr": err["text"]}


def main(argv):
  with open(argv[1]) as f:
    cases = json.load(f)
  # TensorFlow's device probing logs (e.g. cuInit on a machine with CUDA
  # libraries but no driver) go to the real stderr, before the first case.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.list_logical_devices()
  baseline = set(FLAGS)
  results, current, module = {}, None, None
  for case in sorted(cases, key=lambda c: c["module"]):
    if case["module"] != current:
      for name in set(FLAGS) - baseline:  # the last binary's flags and config overrides
        delattr(FLAGS, name)
      module = importlib.import_module(case["module"])
      if hasattr(module, "_define_flags"):
        module._define_flags()  # pylint: disable=protected-access
      current = case["module"]
    results[case["name"]] = run_case(module, case)
  with open(argv[2], "w") as f:
    json.dump(results, f)


if __name__ == "__main__":
  main(sys.argv)
