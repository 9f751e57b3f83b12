"""Security basics: no pickle/eval of untrusted data, paths stay under the
directories given on the command line, JSON-only architecture files."""

import ast
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized

from aps_tf import archfile
from export import exporter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRODUCT = ("aps_tf", "export", "configs", "benchmarks")
# Calls that execute or unpickle data. (np.load is allowed only with allow_pickle=False.)
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "yaml", "joblib"}


def _sources():
  for top in PRODUCT:
    for d, _, files in os.walk(os.path.join(ROOT, top)):
      for name in files:
        if name.endswith(".py"):
          yield os.path.join(d, name)


class SourceTest(absltest.TestCase):

  def test_no_pickle_or_eval(self):
    found = []
    for path in _sources():
      with open(path) as f:
        tree = ast.parse(f.read(), path)
      for node in ast.walk(tree):
        if isinstance(node, ast.Import):
          found += [(path, a.name) for a in node.names
                    if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and \
            node.module.split(".")[0] in FORBIDDEN_MODULES:
          found.append((path, node.module))
        elif isinstance(node, ast.Call):
          fn = node.func
          name = fn.id if isinstance(fn, ast.Name) else None
          if name in FORBIDDEN_CALLS:
            found.append((path, name))
          if isinstance(fn, ast.Attribute) and fn.attr == "load" and \
              isinstance(fn.value, ast.Name) and fn.value.id == "np":
            kw = {k.arg: k.value for k in node.keywords}
            if not (isinstance(kw.get("allow_pickle"), ast.Constant) and
                    kw["allow_pickle"].value is False):
              found.append((path, "np.load without allow_pickle=False"))
    self.assertEmpty(found)


class PathTest(parameterized.TestCase):

  @parameterized.parameters("../escaped", "a/../../b", "/abs", ".hidden", "", "a/b")
  def test_model_name_cannot_leave_export_base(self, name):
    tmp = tempfile.mkdtemp()
    with self.assertRaisesRegex(exporter.ExportError, "model_name"):
      exporter.export(os.path.join(tmp, "nope"), os.path.join(tmp, "base"), name)
    self.assertEqual(os.listdir(tmp), [])

  @parameterized.parameters(
      ("pickle", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00]\x94."),
      ("python", b"__import__('os').system('true')"),
      ("yaml", b"model: resnet20\nwidths: [4, 4]\n"),
  )
  def test_architecture_files_are_json_only(self, _, content):
    path = os.path.join(tempfile.mkdtemp(), "arch.json")
    with open(path, "wb") as f:
      f.write(content)
    with self.assertRaisesRegex(archfile.ArchFileError, "not valid JSON"):
      archfile.load(path)


if __name__ == "__main__":
  absltest.main()
