"""Test tiers: `make test` runs everything (what CI runs); `make test-fast` runs
`pytest -m "not slow"`, the unit tests, for the edit-test loop (< 2 min on 2 cores).

A test is slow when its file, or a node-id prefix of it, is listed in SLOW:
end-to-end runs, subprocesses and binaries, trained models, wheels. Test files
not listed are fast by default; list a new file here when it is not.
"""

import pytest

SLOW = (
    "test_api.py::ImportTest",
    "test_export.py",
    "test_filesystems.py::PipelineOnRamTest",
    "test_keras_import.py::MobileNetV2Test::test_one_trace_serves_several_architectures",
    "test_keras_import.py::MobileNetV3SmallTest::test_one_trace_serves_several_architectures",
    "test_own_model.py",
    "test_experiments.py::SharingAnalysisTest::test_runs_end_to_end",
    "test_package.py",
    "test_search_binary.py",
    "test_search_distribute.py",
    "test_search_loop.py",
    "test_serving.py",
    "test_startup.py::QuietStartupTest",
    "test_train.py",
)


def is_slow(nodeid: str) -> bool:
  """Whether a node id (tests/test_x.py::Class::test) is in the slow tier."""
  path, sep, rest = nodeid.partition("::")
  name = path.rsplit("/", 1)[-1] + sep + rest
  return any(name == s or name.startswith(s + "::") or name.startswith(s + "[")
             for s in SLOW)


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if is_slow(item.nodeid):
      item.add_marker(pytest.mark.slow)
