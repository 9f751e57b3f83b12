"""Runs binaries in one process, case after case, as `python -m MODULE ARGV`
would, recording exit code, stdout and stderr.

  python -m tests.helpers.binary_driver CASES.json RESULTS.json

CASES.json: a list of {"name", "module", "argv"} with optional
"remove": [PATH, ...] (files deleted just before the case runs) and optional
"fail_writes": "EROFS"|"ENOSPC" with "under": DIR: every write under DIR
(Python's and tf.io.gfile's) fails with that errno, as on a read-only or full
file system (ENOSPC still lets an unnamed O_TMPFILE be created, as a full disk
does). Cases run in the given order; each runs its module as `python -m` does
(runpy, as __main__, so flags defined in a `__main__` block exist), after the
flags of the previous case are removed. One TensorFlow import serves every
case instead of one per `python -m` (seconds each on a 2-core machine); the
binaries' own start-up is checked where they still run as subprocesses
(tests/test_package.py's console scripts).
"""

import builtins
import contextlib
import errno
import json
import os
import runpy
import sys
import tempfile
import traceback
from unittest import mock

from absl import flags

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
def _captured(fd: int, out: dict, key: str):
  """Everything written to file descriptor `fd` (Python, absl, TF C++) goes to out[key]."""
  stream = sys.stdout if fd == 1 else sys.stderr
  stream.flush()
  saved = os.dup(fd)
  with tempfile.TemporaryFile() as f:
    os.dup2(f.fileno(), fd)
    try:
      yield
    finally:
      stream.flush()
      os.dup2(saved, fd)
      os.close(saved)
      f.seek(0)
      out[key] = f.read().decode(errors="replace")


def run_case(case: dict) -> dict:
  for path in case.get("remove", ()):
    os.remove(path)
  FLAGS.unparse_flags()
  sys.argv = [case["module"]] + list(case["argv"])
  guard = (failing_writes(case["fail_writes"], case["under"]) if case.get("fail_writes")
           else contextlib.nullcontext())
  out, code = {}, None
  with _captured(2, out, "stderr"), _captured(1, out, "stdout"), guard:
    try:
      # The module (a package's __main__) runs as __main__, its
      # `if __name__ == "__main__"` block included, and exits through aps_tf.cli.run.
      runpy.run_module(case["module"], run_name="__main__", alter_sys=True)
    except SystemExit as e:
      code = e.code
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()
      code = "uncaught"
  return dict(out, code=code)


def run(cases: list[dict]) -> dict:
  """{name: {"code", "stdout", "stderr"}} for `cases`, run in order."""
  # TensorFlow's device probing logs (e.g. cuInit on a machine with CUDA
  # libraries but no driver) go to the real stderr, before the first case.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.list_logical_devices()
  baseline = set(FLAGS)
  results = {}
  for case in cases:
    for name in set(FLAGS) - baseline:  # the last binary's flags and config overrides
      delattr(FLAGS, name)
    results[case["name"]] = run_case(case)
  return results


def run_in_subprocess(cases: list[dict], tmp: str, timeout: int = 900) -> dict:
  """Runs `cases` in one `python -m tests.helpers.binary_driver`; {name: result}."""
  import subprocess  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  cases_path, results_path = os.path.join(tmp, "cases.json"), os.path.join(tmp, "results.json")
  with open(cases_path, "w") as f:
    json.dump(cases, f)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("CUDA_VISIBLE_DEVICES", None)  # '' makes TF log a cuInit error line
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  r = subprocess.run([sys.executable, "-m", "tests.helpers.binary_driver", cases_path,
                      results_path], capture_output=True, text=True, cwd=root, env=env,
                     timeout=timeout)
  if r.returncode != 0 or not os.path.exists(results_path):
    raise AssertionError(f"binary_driver exited {r.returncode}:\n{r.stderr[-3000:]}")
  with open(results_path) as f:
    return json.load(f)


def main(argv):
  with open(argv[1]) as f:
    cases = json.load(f)
  results = run(cases)
  with open(argv[2], "w") as f:
    json.dump(results, f)


if __name__ == "__main__":
  main(sys.argv)
