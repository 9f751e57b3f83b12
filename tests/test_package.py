"""The wheel installs into a fresh venv next to other packages, and its binaries run.

The fresh venv sees this environment's site-packages through a .pth line
(TensorFlow and the other dependencies are not downloaded again; pip runs with
--no-deps --no-index) but not its editable install of aps-tf: a plain path in
a .pth file does not run that directory's own .pth hooks, and the scripts run
outside the checkout. Beside aps-tf the venv holds another distribution with
its own top-level `configs` and `export` packages, and the binaries run from a
directory that has a `configs/` folder of its own: the wheel must claim only
the `aps_tf` import name and must not import either.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
import zipfile

from absl.testing import absltest
import pytest

from aps_tf import console
from aps_tf.configs import quick
from tests.helpers import train_util

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A wheel build, a fresh venv and the console scripts.
pytestmark = pytest.mark.slow

# The export's verification on few images (the wheel's binaries connect; parity
# itself: tests/test_export.py).
FEW_EXPORT_EXAMPLES = ["--config.export.parity_examples=32",
                       "--config.export.representative_examples=16",
                       "--config.export.latency_runs=2"]
OTHER_PACKAGE = {  # a distribution with generic top-level names of its own
    "pyproject.toml": '[build-system]\nrequires = ["setuptools"]\n'
                      'build-backend = "setuptools.build_meta"\n\n[project]\n'
                      'name = "other-configs"\nversion = "1.0"\n\n'
                      '[tool.setuptools]\npackages = ["configs", "export"]\n',
    "configs/__init__.py": 'OWNER = "other-configs"\n',
    "export/__init__.py": 'OWNER = "other-configs"\n',
}
SHADOW = {  # a user's own configs/ in the working directory
    "configs/__init__.py": 'raise ImportError("the working directory\'s configs/ was imported")\n',
    "configs/base.py": 'raise ImportError("the working directory\'s configs/base.py was imported")\n',
    "export/__init__.py": 'raise ImportError("the working directory\'s export/ was imported")\n',
}


def _run(cmd, **kwargs):
  r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, **kwargs)
  if r.returncode != 0:
    raise AssertionError(f"{cmd} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
  return r


def _write_tree(root, files):
  for rel, text in files.items():
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write(text)


class WheelTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    src = os.path.join(cls.tmp, "src")  # a clean copy: no build/ or egg-info in the checkout
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    os.makedirs(src)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
      shutil.copy(os.path.join(ROOT, name), src)
    for name in ("aps_tf", "configs", "export"):
      shutil.copytree(os.path.join(ROOT, name), os.path.join(src, name), ignore=ignore)
    dist = os.path.join(cls.tmp, "dist")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", dist, src])
    (cls.wheel,) = [os.path.join(dist, f) for f in os.listdir(dist) if f.endswith(".whl")]
    other = os.path.join(cls.tmp, "other")
    _write_tree(other, OTHER_PACKAGE)
    # PYTHONPATH (a developer's, pointing at a checkout with an egg-info) would
    # show pip the checkout as an installed aps-tf and skip the wheel.
    cls.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    cls.venv = os.path.join(cls.tmp, "venv")
    _run([sys.executable, "-m", "venv", cls.venv])
    bin_dir = os.path.join(cls.venv, "bin")
    cls.python = os.path.join(bin_dir, "python")
    purelib = _run([cls.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
                    ], env=cls.env).stdout.strip()
    with open(os.path.join(purelib, "outer_site_packages.pth"), "w") as f:
      f.write(sysconfig.get_paths()["purelib"] + "\n")
    _run([cls.python, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
          "--no-build-isolation", other], env=cls.env)
    _run([cls.python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", cls.wheel],
         env=cls.env)
    cls.bin = bin_dir
    cls.purelib = purelib
    cls.work = os.path.join(cls.tmp, "work")  # the binaries' working directory
    _write_tree(cls.work, SHADOW)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _bin(self, script, *args):
    return _run([os.path.join(self.bin, script)] + list(args), cwd=self.work, env=self.env)

  def test_wheel_claims_only_aps_tf(self):
    with zipfile.ZipFile(self.wheel) as z:
      names = set(z.namelist())
      top_level = next(z.read(n).decode() for n in names if n.endswith("top_level.txt"))
      metadata = next(z.read(n).decode() for n in names if n.endswith("/METADATA"))
    self.assertEqual(top_level.split(), ["aps_tf"])
    self.assertEqual({n.split("/")[0] for n in names if not n.startswith("aps_tf-")}, {"aps_tf"})
    self.assertContainsSubset({"aps_tf/configs/quick.py", "aps_tf/configs/cifar10_resnet20_50.py",
                               "aps_tf/export/verify.py", "aps_tf/export/qat.py",
                               "aps_tf/console.py"}, names)
    # The wheel's aps_tf/configs/__init__.py is configs/__init__.py, not the checkout's stand-in.
    with zipfile.ZipFile(self.wheel) as z:
      self.assertNotIn(b"__path__", z.read("aps_tf/configs/__init__.py"))
    self.assertIn("Requires-Dist: tensorflow", metadata)
    self.assertIn("Provides-Extra: qat", metadata)
    self.assertIn("Provides-Extra: serving", metadata)

  def test_every_binary_has_a_console_script(self):
    with zipfile.ZipFile(self.wheel) as z:
      entry_points = next(z.read(n).decode() for n in z.namelist()
                          if n.endswith("entry_points.txt"))
    scripts = dict(re.findall(r"^(aps-[a-z-]+) = (\S+)$", entry_points, re.M))
    self.assertEqual(set(scripts), set(console.BINARIES))
    for script in scripts:
      self.assertTrue(os.path.exists(os.path.join(self.bin, script)), script)

  def test_imports_come_from_the_wheel_and_other_packages_keep_theirs(self):
    r = _run([self.python, "-c",
              "import configs, export; print(configs.OWNER, export.OWNER)\n"
              "from aps_tf.configs import base\nfrom aps_tf.export import exporter\n"
              "from aps_tf import config_names\n"
              "print(base.__file__); print(exporter.__file__); print(config_names.path_of('quick'))\n"
              # Every module of the installed package imports, through aps_tf only
              # (nothing left out of the wheel); each binary's flags are removed
              # before the next is imported.
              "import importlib, pkgutil, aps_tf\nfrom absl import flags\n"
              "baseline = set(flags.FLAGS)\n"
              "for m in pkgutil.walk_packages(aps_tf.__path__, 'aps_tf.'):\n"
              "  print(importlib.import_module(m.name).__file__)\n"
              "  for name in set(flags.FLAGS) - baseline: delattr(flags.FLAGS, name)"],
             cwd=self.tmp, env=self.env)  # not self.work: `python -c` imports from its cwd
    lines = r.stdout.split("\n")
    self.assertEqual(lines[0], "other-configs other-configs")
    self.assertGreater(len(lines), 60)  # every module's file
    for line in filter(None, lines[1:]):
      self.assertTrue(line.startswith(os.path.join(self.purelib, "aps_tf")), (line, self.purelib))

  def test_aps_flops_json(self):
    r = self._bin("aps-flops", "--model=resnet20", "--json")
    out = json.loads(r.stdout)
    self.assertEqual((out["flops"], out["params"]), (40813194, 272474))
    self.assertEqual(r.stderr, "")

  def test_train_export(self):
    # The wheel's retraining and export binaries on an architecture file of
    # the quick config (the search binary from the wheel: test_configs_by_name;
    # its run end to end: tests/test_soak.py).
    cfg = quick.get_config()
    os.makedirs(os.path.join(self.work, "run"), exist_ok=True)
    train_util.write_arch(cfg, os.path.join(self.work, "run/arch.json"), index=0)
    self._bin("aps-train", "--config=quick", "--arch=run/arch.json",
              "--workdir=run/train", "--config.train.epochs=1",
              "--config.train.batch_size=256", *FEW_EXPORT_EXAMPLES,
              "--noprogress")
    self._bin("aps-export", "--workdir=run/train", "--export_base=run/serving",
              "--model_name=digits", "--formats=saved_model,tflite_float32")
    version = os.path.join(self.work, "run/serving/digits/1")
    for name in ("saved_model.pb", "tflite/model_float32.tflite", "export_report.json"):
      self.assertTrue(os.path.exists(os.path.join(version, name)), name)
    report = json.load(open(os.path.join(version, "export_report.json")))
    self.assertIn("tflite_float32", json.dumps(report))

  def test_configs_by_name(self):
    r = subprocess.run([os.path.join(self.bin, "aps-search"), "--config=cifar11",
                        "--workdir=w"], capture_output=True, text=True, cwd=self.work,
                       env=self.env, timeout=300)
    self.assertEqual(r.returncode, 2, r.stderr)
    self.assertIn("cifar10_resnet20_50", r.stderr)


class ConsoleScriptsTest(absltest.TestCase):
  """pyproject.toml, aps_tf.console and README's command reference agree."""

  def test_pyproject_scripts_are_the_binaries(self):
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
      scripts = tomllib.load(f)["project"]["scripts"]
    self.assertEqual(set(scripts), set(console.BINARIES))
    for script, target in scripts.items():
      module, func = target.split(":")
      self.assertEqual(module, "aps_tf.console")
      self.assertTrue(callable(getattr(console, func)), script)

  def test_readme_documents_every_binary(self):
    with open(os.path.join(ROOT, "README.md")) as f:
      readme = f.read()
    for script, module in console.BINARIES.items():
      self.assertRegex(readme, rf"\| `{script}` \| `{re.escape(module)}` \|")

  def test_product_imports_configs_and_export_through_aps_tf(self):
    # Installed, `configs` and `export` are aps_tf.configs and aps_tf.export; a
    # top-level import finds another distribution's package or none (even when
    # it sits inside a function, out of the wheel test's import walk's reach).
    bare = re.compile(r"^\s*(from|import)\s+(configs|export)\b", re.M)
    found = []
    for top in ("aps_tf", "configs", "export"):
      for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
        for name in files:
          if name.endswith(".py"):
            path = os.path.join(dirpath, name)
            with open(path) as f:
              found += [f"{os.path.relpath(path, ROOT)}: {m.group(0).strip()}"
                        for m in bare.finditer(f.read())]
    self.assertEmpty(found)

  def test_package_data_mapping(self):
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
      tool = tomllib.load(f)["tool"]["setuptools"]
    self.assertEqual(tool["package-dir"], {"aps_tf.configs": "configs",
                                           "aps_tf.export": "export"})
    self.assertEqual(tool["packages"]["find"]["include"], ["aps_tf", "aps_tf.*"])


if __name__ == "__main__":
  absltest.main()
