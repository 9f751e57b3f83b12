"""The suite's own scheduling (tests/conftest.py): longest recorded file first."""

import json
import os
import tempfile
import types
from unittest import mock

from absl.testing import absltest

from tests import conftest


def _items(*nodeids):
  return [types.SimpleNamespace(nodeid=n) for n in nodeids]


class LongestFirstTest(absltest.TestCase):

  def _order(self, files, nodeids):
    path = os.path.join(tempfile.mkdtemp(), "durations.json")
    with open(path, "w") as f:
      json.dump({"files": files}, f)
    items = _items(*nodeids)
    with mock.patch.object(conftest, "DURATIONS", path):
      conftest._longest_first(items)  # pylint: disable=protected-access
    return [i.nodeid for i in items]

  def test_files_by_recorded_seconds_unknown_first_tests_kept_in_order(self):
    order = self._order({"tests/a.py": 3.0, "tests/b.py": 120.0, "tests/c.py": 40.0},
                        ["tests/a.py::T::x", "tests/b.py::T::x", "tests/a.py::T::y",
                         "tests/c.py::T::x", "tests/new.py::T::x", "tests/b.py::T::y"])
    self.assertEqual(order, ["tests/new.py::T::x", "tests/b.py::T::x", "tests/b.py::T::y",
                             "tests/c.py::T::x", "tests/a.py::T::x", "tests/a.py::T::y"])

  def test_a_missing_or_broken_record_keeps_the_collection_order(self):
    ids = ["tests/z.py::T::x", "tests/a.py::T::x", "tests/z.py::T::y"]
    with mock.patch.object(conftest, "DURATIONS", "/nonexistent/durations.json"):
      items = _items(*ids)
      conftest._longest_first(items)  # pylint: disable=protected-access
    self.assertEqual([i.nodeid for i in items],
                     ["tests/z.py::T::x", "tests/z.py::T::y", "tests/a.py::T::x"])

  def test_the_shipped_record_names_existing_files(self):
    with open(conftest.DURATIONS) as f:
      files = json.load(f)["files"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    self.assertGreater(len(files), 20)
    for name, seconds in files.items():
      self.assertTrue(os.path.exists(os.path.join(root, name)), name)
      self.assertGreaterEqual(seconds, 0.0, name)


if __name__ == "__main__":
  absltest.main()
