"""TensorFlow's CPU runtime settings for the test processes (no tests here).

tests/conftest.py applies `TEST_RUNTIME` before TensorFlow loads, so the
pytest processes, the xdist workers and every subprocess a test starts run
with them:
- one intra-op thread per process: the two workers already fill the two
  cores, and with TensorFlow's default (a thread per core in each process)
  their thread pools compete for them;
- oneDNN off: the tests' tensors are tiny and their shapes change with every
  sampled architecture, and oneDNN builds a kernel for each new shape.
docs/testing.md says how much each saved. `user_env` gives a subprocess the
runtime a user gets (the tests of start-up output).
"""

import json
import os

TEST_RUNTIME = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2",
                "OMP_NUM_THREADS": "1", "TF_ENABLE_ONEDNN_OPTS": "0"}
# What the environment held before the first `apply` (JSON, null: unset), kept
# in the environment itself so that the xdist workers and subprocesses, which
# inherit the applied values, still know a user's.
BEFORE_ENV = "APS_TF_TEST_RUNTIME_BEFORE"


def apply() -> None:
  """Sets TEST_RUNTIME in os.environ; a value already there is kept."""
  if BEFORE_ENV not in os.environ:
    os.environ[BEFORE_ENV] = json.dumps({k: os.environ.get(k) for k in TEST_RUNTIME})
  for key, value in TEST_RUNTIME.items():
    os.environ.setdefault(key, value)


def user_env(**extra: str) -> dict:
  """os.environ with the runtime settings as before `apply`, plus `extra`."""
  env = dict(os.environ)
  before = json.loads(env.pop(BEFORE_ENV, "{}"))
  for key, value in before.items():
    if value is None:
      env.pop(key, None)
    else:
      env[key] = value
  env.update(extra)
  return env
