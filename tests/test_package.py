"""The wheel installs into a fresh venv and its console scripts run.

The fresh venv sees this environment's site-packages through a .pth line
(TensorFlow and the other dependencies are not downloaded again; pip runs with
--no-deps --no-index) but not its editable install of aps-tf: a plain path in
a .pth file does not run that directory's own .pth hooks, and the scripts run
outside the checkout.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile

from absl.testing import absltest
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A wheel build, a fresh venv and the console scripts.
pytestmark = pytest.mark.slow

SCRIPTS = ("aps-search", "aps-train", "aps-export", "aps-verify", "aps-flops")


def _run(cmd, **kwargs):
  r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
  if r.returncode != 0:
    raise AssertionError(f"{cmd} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
  return r


class WheelTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    src = os.path.join(cls.tmp, "src")  # a clean copy: no build/ or egg-info in the checkout
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    os.makedirs(src)
    for name in ("pyproject.toml", "README.md"):
      shutil.copy(os.path.join(ROOT, name), src)
    for name in ("aps_tf", "configs", "export"):
      shutil.copytree(os.path.join(ROOT, name), os.path.join(src, name), ignore=ignore)
    dist = os.path.join(cls.tmp, "dist")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
          "-w", dist, src])
    (cls.wheel,) = [os.path.join(dist, f) for f in os.listdir(dist) if f.endswith(".whl")]
    cls.venv = os.path.join(cls.tmp, "venv")
    _run([sys.executable, "-m", "venv", cls.venv])
    bin_dir = os.path.join(cls.venv, "bin")
    cls.python = os.path.join(bin_dir, "python")
    purelib = _run([cls.python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"
                    ]).stdout.strip()
    with open(os.path.join(purelib, "outer_site_packages.pth"), "w") as f:
      f.write(sysconfig.get_paths()["purelib"] + "\n")
    _run([cls.python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", cls.wheel])
    cls.bin = bin_dir
    cls.purelib = purelib
    cls.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def test_wheel_contents(self):
    with zipfile.ZipFile(self.wheel) as z:
      names = set(z.namelist())
      entry_points = next(z.read(n).decode() for n in names if n.endswith("entry_points.txt"))
      metadata = next(z.read(n).decode() for n in names if n.endswith("/METADATA"))
    self.assertContainsSubset({"configs/quick.py", "configs/cifar10_resnet20_50.py",
                               "export/verify.py", "export/qat.py", "aps_tf/console.py"}, names)
    self.assertFalse([n for n in names if n.startswith("tests/")])
    for script in SCRIPTS:
      self.assertIn(f"{script} = aps_tf.console:", entry_points)
    self.assertIn("Requires-Dist: tensorflow", metadata)
    self.assertIn("Provides-Extra: qat", metadata)
    self.assertIn("Provides-Extra: serving", metadata)

  def test_aps_flops_json(self):
    r = _run([os.path.join(self.bin, "aps-flops"), "--model=resnet20", "--json"],
             cwd=self.tmp, env=self.env)
    out = json.loads(r.stdout)
    self.assertEqual((out["flops"], out["params"]), (40813194, 272474))
    self.assertEqual(r.stderr, "")

  def test_imports_come_from_the_installed_wheel(self):
    r = _run([self.python, "-c", "import aps_tf, configs, export; from aps_tf import "
              "config_names; print(aps_tf.__file__); print(config_names.path_of('quick'))"],
             cwd=self.tmp, env=self.env)
    for line in r.stdout.split():
      self.assertTrue(line.startswith(self.purelib), (line, self.purelib))

  def test_configs_by_name(self):
    r = subprocess.run([os.path.join(self.bin, "aps-search"), "--config=cifar11",
                        "--workdir=w"], capture_output=True, text=True, cwd=self.tmp,
                       env=self.env, timeout=300)
    self.assertEqual(r.returncode, 2, r.stderr)
    self.assertIn("cifar10_resnet20_50", r.stderr)


if __name__ == "__main__":
  absltest.main()
