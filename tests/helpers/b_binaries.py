"""Runs binaries in one process, in the given order, as `python -m MODULE ARGS`
would, recording exit code, stdout and stderr.

  python -m tests.helpers.b_binaries CASES.json RESULTS.json

CASES.json: a list of {"name", "module", "argv", optional "remove": [PATH, ...]
(files deleted just before the case runs)}. One TensorFlow import for every
case instead of one per `python -m` (seconds each on a 2-core machine); the
binaries' own start-up is checked by the tests that still run them as
subprocesses (tests/test_package.py's console scripts, tests/test_user_errors.py).
Each case runs its module as `python -m` does (runpy, as __main__), after the
flags the previous case defined are removed.
"""

import contextlib
import json
import os
import runpy
import sys
import tempfile
import traceback

from absl import flags

FLAGS = flags.FLAGS


@contextlib.contextmanager
def _captured(fd: int, out: dict, key: str):
  """Everything written to file descriptor `fd` goes to out[key]."""
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


def run(cases: list[dict]) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.list_logical_devices()  # device probing logs before the first case
  baseline = set(FLAGS)
  results = {}
  for case in cases:
    for name in set(FLAGS) - baseline:  # the last binary's flags and config overrides
      delattr(FLAGS, name)
    for path in case.get("remove", ()):
      os.remove(path)
    FLAGS.unparse_flags()
    sys.argv = [case["module"]] + list(case["argv"])
    out, code = {}, None
    with _captured(2, out, "stderr"), _captured(1, out, "stdout"):
      try:
        # As `python -m MODULE`: the module (a package's __main__) runs as
        # __main__, its `if __name__ == "__main__"` block included (where
        # e.g. export.verify defines its flags), and exits through aps_tf.cli.run.
        runpy.run_module(case["module"], run_name="__main__", alter_sys=True)
      except SystemExit as e:
        code = e.code
      except BaseException:  # pylint: disable=broad-except
        traceback.print_exc()
        code = "uncaught"
    results[case["name"]] = dict(out, code=code)
  return results


def run_in_subprocess(cases: list[dict], tmp: str, timeout: int = 900) -> dict:
  """Runs `cases` in one `python -m tests.helpers.b_binaries`; {name: result}."""
  import subprocess  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  cases_path, results_path = os.path.join(tmp, "cases.json"), os.path.join(tmp, "results.json")
  with open(cases_path, "w") as f:
    json.dump(cases, f)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=root)
  r = subprocess.run([sys.executable, "-m", "tests.helpers.b_binaries", cases_path,
                      results_path], capture_output=True, text=True, cwd=root, env=env,
                     timeout=timeout)
  if r.returncode != 0:
    raise AssertionError(f"b_binaries exited {r.returncode}:\n{r.stderr[-3000:]}")
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
