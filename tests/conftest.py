"""Test tiers, the shared run cache, and the opt-in live TF-Serving test.

Tiers: `make test` runs everything (what CI runs); `make test-fast` runs
`pytest -m "not slow"`, the unit tests, for the edit-test loop. A test is slow
when it is marked where it is written: `@pytest.mark.slow` on the test or its
class, or `pytestmark = pytest.mark.slow` for a file whose tests are all slow
(end-to-end runs, subprocesses and binaries, trained models, wheels, XLA
compilations; anything over a few seconds). On an absl parameterized test the
mark goes directly above `def`, below `@parameterized...` (the generated tests
copy the function's marks, not the decorator object's).

Order: `--dist loadfile` runs each file on one worker, and pytest-xdist hands
out the files with the most tests first (its default `--loadscope-reorder`),
whatever the collection order. Longest-first by recorded per-file times was
measured slower (docs/testing.md), so the suite keeps xdist's order.

Shared runs: tests/helpers/shared_runs.py builds the expensive fixtures (one
trained child, its export) once per `pytest` session and hands copies to the
test files that need them, across pytest-xdist workers. The cache directory is
made here, passed to the workers, and removed at the end.

Temporary files: each `pytest` session makes one directory
(`aps_tf_test_tmp_*`) and points `TMPDIR` and `tempfile.tempdir` at it, in
this process, the xdist workers and every subprocess a test starts. Whatever a
test or TensorFlow leaves behind (autograph's generated sources, a test's
`mkdtemp`) goes there and is removed with it at the end of the session.

Live TF-Serving: tests marked `live_serving` start a real
`tensorflow_model_server`, which no package registry this project installs
from ships (TF-Serving is a C++ binary from its docker image or Google's own
apt repository). They run only when `APS_TF_LIVE_SERVING=1` is set, and then
fail, not skip, when the binary is not on PATH; otherwise they are deselected
and the run's summary says so.
"""

import os
import shutil
import tempfile

# TensorFlow reads its CPU runtime settings once, when it loads: the tests'
# (tests/helpers/runtime_env.py) go into the environment first, for this
# process, the xdist workers and the subprocesses tests start.
from tests.helpers import runtime_env  # pylint: disable=g-import-not-at-top

runtime_env.apply()

import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

from tests.helpers import shared_runs  # pylint: disable=g-import-not-at-top,wrong-import-position

LIVE_SERVING_ENV = "APS_TF_LIVE_SERVING"
TEMP_ROOT_KEY = "aps_tf_temp_root"


def _use_temp_root(path: str) -> None:
  os.environ["TMPDIR"] = path
  tempfile.tempdir = path


def _live_serving_enabled() -> bool:
  return os.environ.get(LIVE_SERVING_ENV, "") not in ("", "0")


def pytest_configure(config):
  if hasattr(config, "workerinput"):  # an xdist worker: the controller's directories
    _use_temp_root(config.workerinput[TEMP_ROOT_KEY])
    os.environ[shared_runs.CACHE_ENV] = config.workerinput[shared_runs.CACHE_ENV]
    return
  root = tempfile.mkdtemp(prefix="aps_tf_test_tmp_")
  config._aps_temp_root = root  # pylint: disable=protected-access
  _use_temp_root(root)
  if not os.environ.get(shared_runs.CACHE_ENV):
    # Inside the temporary root, so it goes with it at the end.
    config._aps_cache = tempfile.mkdtemp(prefix="aps_tf_test_cache_")  # pylint: disable=protected-access
    os.environ[shared_runs.CACHE_ENV] = config._aps_cache  # pylint: disable=protected-access


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
  """xdist controller: every worker uses the controller's cache and temporary directories."""
  node.workerinput[shared_runs.CACHE_ENV] = os.environ[shared_runs.CACHE_ENV]
  node.workerinput[TEMP_ROOT_KEY] = node.config._aps_temp_root  # pylint: disable=protected-access


def pytest_unconfigure(config):
  root = getattr(config, "_aps_temp_root", None)
  if root:  # the controller: its temporary root, with the cache it made
    shutil.rmtree(root, ignore_errors=True)
  if getattr(config, "_aps_cache", None):
    os.environ.pop(shared_runs.CACHE_ENV, None)


def pytest_collection_modifyitems(config, items):
  del config
  if _live_serving_enabled():
    return
  live = [item for item in items if item.get_closest_marker("live_serving")]
  if live:
    items[:] = [item for item in items if not item.get_closest_marker("live_serving")]
    # xdist workers do not report deselections: the ids go through the cache
    # directory to whichever process prints the summary.
    with open(os.path.join(os.environ[shared_runs.CACHE_ENV],
                           f"live_serving_deselected.{os.getpid()}"), "w") as f:
      f.write("\n".join(item.nodeid for item in live))


def pytest_terminal_summary(terminalreporter, config):
  del config
  root = os.environ.get(shared_runs.CACHE_ENV)
  if not root or not os.path.isdir(root):
    return
  ids = set()
  for name in os.listdir(root):
    if name.startswith("live_serving_deselected."):
      with open(os.path.join(root, name)) as f:
        ids.update(f.read().split())
  if ids:
    terminalreporter.write_line(
        f"{len(ids)} live TF-Serving test(s) deselected: set {LIVE_SERVING_ENV}=1 with "
        "tensorflow_model_server on PATH to run them")
