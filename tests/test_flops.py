"""FLOPs/params: paper base numbers, agreement with the built Keras model, binary."""

import json
import os
import subprocess
import sys

from absl.testing import parameterized
import numpy as np

from aps_tf import flops
from aps_tf.models import dense
from aps_tf.models import topology as topo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", "aps_tf.flops", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=120)


class BaseNumbersTest(parameterized.TestCase):

  @parameterized.parameters(
      ("resnet20", (32, 32, 3), 10, 40_813_194, 40.81e6),
      ("resnet56", (32, 32, 3), 10, 125_747_850, 125.75e6),
      ("resnet18", (224, 224, 3), 1000, 1_814_074_344, 1.82e9),
      ("mobilenet_v2", (224, 224, 3), 1000, 300_775_272, 300.8e6),
  )
  def test_base_model_flops(self, model, shape, classes, exact, paper):
    t = topo.build_topology(model, shape, classes)
    got = flops.count(t, t.base_widths)["flops"]
    self.assertEqual(got, exact)
    self.assertLess(abs(got - paper) / paper, 0.005)

  def test_search_convention_counts_only_spatial_convs(self):
    t = topo.build_topology("resnet20")
    search = flops.count(t, t.base_widths, "search")["flops"]
    # The authors' tables: no 1x1 shortcuts, no classifier; 2.05e7 is its 50%.
    self.assertEqual(search, 40_550_400)
    self.assertAlmostEqual(2.05e7 / search, 0.5, delta=0.01)

  def test_bad_widths(self):
    t = topo.build_topology("resnet20")
    with self.assertRaisesRegex(ValueError, "expected 19 widths, got 3"):
      flops.count(t, [1, 2, 3])
    with self.assertRaisesRegex(ValueError, "positive"):
      flops.count(t, [0] * 19)
    with self.assertRaisesRegex(ValueError, "unknown FLOPs convention"):
      flops.count(t, t.base_widths, "macs")


class KerasAgreementTest(parameterized.TestCase):

  @parameterized.parameters(("resnet20", (32, 32, 3), 10), ("resnet18", (64, 64, 3), 100),
                            ("mobilenet_v2", (96, 96, 3), 100))
  def test_counter_matches_keras_model(self, name, shape, classes):
    t = topo.build_topology(name, shape, classes)
    rng = np.random.default_rng(0)
    for _ in range(2):
      widths = t.space.widths(t.space.sample_uniform(rng))
      model = dense.build(t, widths)  # one Keras model, counted in both conventions
      for convention in ("full", "search"):
        ours = flops.count(t, widths, convention)
        theirs = flops.count_keras_model(model, convention)
        self.assertEqual(ours["flops"], theirs["flops"], convention)
        self.assertEqual(ours["params"], theirs["params"], convention)


# Every new topology option, each family it applies to.
OPTIONS = (
    dict(downsample_shortcut="avgpool_conv"),
    dict(fix_last_width=True),
    dict(space="reference"),
    dict(space="reference", downsample_shortcut="avgpool_conv"),
)
MOBILENET_OPTIONS = (dict(space="reference"),)


def _option_cases(models):
  cases = []
  for name, shape, classes, exact in models:
    for opt in (MOBILENET_OPTIONS if name == "mobilenet_v2" else OPTIONS):
      label = "_".join(f"{k}_{v}" for k, v in opt.items())
      cases.append((f"{name}_{label}", name, shape, classes, exact, opt))
  return cases


class OptionsTest(parameterized.TestCase):

  @parameterized.named_parameters(*_option_cases([
      ("resnet20", (32, 32, 3), 10, 40_813_194),
      ("resnet56", (32, 32, 3), 10, 125_747_850),
      ("resnet18", (224, 224, 3), 1000, 1_814_074_344),
      ("mobilenet_v2", (224, 224, 3), 1000, 300_775_272)]))
  def test_base_model_flops_unchanged(self, name, shape, classes, exact, opt):
    t = topo.build_topology(name, shape, classes, **opt)
    self.assertEqual(flops.count(t, t.base_widths)["flops"], exact)

  def test_avgpool_shortcut_drops_only_bn_params(self):
    plain = topo.build_topology("resnet20")
    pooled = topo.build_topology("resnet20", downsample_shortcut="avgpool_conv")
    a, b = flops.count(plain, plain.base_widths), flops.count(pooled, pooled.base_widths)
    self.assertEqual(a["flops"], b["flops"])
    self.assertEqual(a["params"] - b["params"], 2 * (32 + 64))  # two strided shortcuts' BN

  @parameterized.named_parameters(*_option_cases([
      ("resnet20", (32, 32, 3), 10, None), ("resnet18", (64, 64, 3), 100, None),
      ("mobilenet_v2", (96, 96, 3), 100, None)]))
  def test_counter_matches_keras_model(self, name, shape, classes, exact, opt):
    del exact
    t = topo.build_topology(name, shape, classes, **opt)
    rng = np.random.default_rng(1)
    archs = [t.space.smallest(), t.space.sample_uniform(rng)]
    for arch in archs:
      widths = t.space.widths(arch)
      model = dense.build(t, widths)
      for convention in flops.CONVENTIONS:
        ours = flops.count(t, widths, convention)
        theirs = flops.count_keras_model(model, convention)
        self.assertEqual(ours["flops"], theirs["flops"], (arch, convention))
        self.assertEqual(ours["params"], theirs["params"], (arch, convention))


class BinaryTest(parameterized.TestCase):

  def test_json_base_resnet20(self):
    out = _run("--model=resnet20", "--json")
    self.assertEqual(out.returncode, 0, out.stderr)
    result = json.loads(out.stdout)
    self.assertEqual(result["flops"], 40_813_194)
    self.assertEqual(result["params"], 272_474)

  def test_widths_and_table(self):
    widths = ",".join(["8"] * 19)
    out = _run("--model=resnet20", f"--widths={widths}", "--convention=search")
    self.assertEqual(out.returncode, 0, out.stderr)
    self.assertIn("FLOPs (search)", out.stdout)
    t = topo.build_topology("resnet20")
    expected = flops.count(t, [8] * 19, "search")["flops"]
    self.assertIn(f"{expected:,}", out.stdout)

  def test_image_size_resnet18(self):
    out = _run("--model=resnet18", "--json")
    self.assertEqual(json.loads(out.stdout)["flops"], 1_814_074_344)  # 224 by default
    out = _run("--model=resnet18", "--image_size=112", "--json")
    self.assertEqual(out.returncode, 0, out.stderr)
    result = json.loads(out.stdout)
    self.assertEqual(result["input_shape"], [112, 112, 3])
    t = topo.build_topology("resnet18", (112, 112, 3), 1000)
    self.assertEqual(result["flops"], flops.count(t, t.base_widths)["flops"])
    self.assertLess(result["flops"], 1_814_074_344 / 3)

  # Bad input (exit 2, one line on stderr): tests/test_user_errors.py, in one process.


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
