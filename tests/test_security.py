"""Security basics: no pickle/eval of untrusted data, paths stay under the
directories given on the command line, JSON-only architecture files."""

import ast
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized

from aps_tf import archfile
from aps_tf.export import exporter

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


# Direct local-file calls that bypass aps_tf.fileio (tf.io.gfile), so would not
# work on gs:// or ram:// run paths.
LOCAL_FILE_CALLS = {
    "open", "os.makedirs", "os.mkdir", "os.path.exists", "os.path.isdir", "os.path.isfile",
    "os.path.getsize", "os.path.getmtime", "os.path.abspath", "os.listdir", "os.scandir",
    "os.walk", "os.replace", "os.rename", "os.remove", "os.unlink", "os.rmdir", "os.chmod",
    "glob.glob", "np.save", "np.savez", "json.dump", "json.load", "pathlib.Path",
}
LOCAL_FILE_PREFIXES = ("shutil.", "tempfile.")
# (file, call) -> why it is not a run path.
LOCAL_FILE_ALLOWED = {
    ("aps_tf/startup.py", "glob.glob"): "probes /dev/nvidia*, a local device",
    ("aps_tf/latency/measure.py", "open"): "reads /proc/cpuinfo of this machine",
    ("aps_tf/config_names.py", "os.path.exists"): "a --config file is a local Python module",
    ("aps_tf/config_names.py", "pathlib.Path"): "lists the shipped configs' own folder",
    ("aps_tf/workdir.py", "os.path.abspath"): "ensure_writable's errno probe, local paths only",
    ("aps_tf/workdir.py", "os.path.exists"): "ensure_writable's errno probe, local paths only",
    ("aps_tf/workdir.py", "os.path.isdir"): "ensure_writable's errno probe, local paths only",
    ("aps_tf/workdir.py", "tempfile.TemporaryFile"): "ensure_writable's errno probe, local "
                                                     "paths only",
    ("aps_tf/latency/build.py", "os.chmod"): "makes the emitted script executable, local only",
    ("export/qat.py", "os.path.abspath"): "the package's own directory (__file__)",
    ("aps_tf/api.py", "tempfile.gettempdir"): "the default workdir of a Python-API search "
                                              "given none: this machine's temp folder",
}
# Whole files: the file layer itself (atomic rename, local staging), and
# files not yet ported.
LOCAL_FILE_ALLOWED_FILES = {
    "aps_tf/fileio.py": "the one file layer",
}


def _call_name(fn) -> str | None:
  parts = []
  while isinstance(fn, ast.Attribute):
    parts.append(fn.attr)
    fn = fn.value
  if not isinstance(fn, ast.Name):
    return None
  parts.append(fn.id)
  return ".".join(reversed(parts))


def local_file_calls(path: str) -> list[tuple[int, str]]:
  """(line, call) of every direct local-file call in the Python file PATH."""
  with open(path) as f:
    tree = ast.parse(f.read(), path)
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Call):
      name = _call_name(node.func)
      if name and (name in LOCAL_FILE_CALLS or name.startswith(LOCAL_FILE_PREFIXES)):
        found.append((node.lineno, name))
  return found


class FileAccessTest(absltest.TestCase):
  """Run paths (workdirs, export bases, reports) go through aps_tf.fileio."""

  def test_no_direct_local_file_calls(self):
    found, used = [], set()
    for path in _sources():
      rel = os.path.relpath(path, ROOT)
      if not rel.startswith(("aps_tf" + os.sep, "export" + os.sep)):
        continue
      if rel in LOCAL_FILE_ALLOWED_FILES:
        continue
      for line, name in local_file_calls(path):
        if (rel, name) in LOCAL_FILE_ALLOWED:
          used.add((rel, name))
        else:
          found.append(f"{rel}:{line}: {name}(...)")
    self.assertEmpty(found, "use aps_tf.fileio (tf.io.gfile) for run paths, or add the "
                     "call to LOCAL_FILE_ALLOWED with the reason")
    self.assertEmpty(set(LOCAL_FILE_ALLOWED) - used, "stale LOCAL_FILE_ALLOWED entries")

  def test_the_check_sees_each_kind_of_call(self):
    src = ("import os, shutil, tempfile, json\n"
           "def f(p):\n"
           "  open(p)\n  os.makedirs(p)\n  os.path.exists(p)\n  shutil.rmtree(p)\n"
           "  tempfile.mkdtemp(dir=p)\n  json.dump({}, p)\n  fileio.exists(p)\n")
    path = os.path.join(tempfile.mkdtemp(), "m.py")
    with open(path, "w") as f:
      f.write(src)
    self.assertEqual([n for _, n in local_file_calls(path)],
                     ["open", "os.makedirs", "os.path.exists", "shutil.rmtree",
                      "tempfile.mkdtemp", "json.dump"])


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
