"""The Phi schedule tool and the configs' transition defaults at real paper widths."""

import json
import os
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import parameterized
import numpy as np
import pytest

from aps_tf import errors
from aps_tf.experiments import phi_schedule
from configs import cifar10_resnet20_50
from configs import imagenet_mobilenet_v2
from configs import imagenet_resnet18
from configs import quick

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Phi(end)/Phi(0) of the reference's l1 objective at each paper config's own
# settings, measured with the tool (every step; too slow for the suite):
#   python -m aps_tf.experiments.phi_schedule --config=configs/<config>.py \
#       --objectives=reference [--config.search.phi_lr=1e-4 --max_columns=1344]
# (MobileNetV2: at the reference's tau 1e-4, on the 33 of 53 layers whose sides
# have at most 1,344 columns.) The configs' exact defaults are matched to these.
REFERENCE_END = {"resnet20": 0.296, "resnet18": 0.9906, "mobilenet_v2": 0.9975}


class PaperWidthsTest(parameterized.TestCase):
  """The default step neither diverges nor finishes the transition in < 10% of the
  search, and ends where the reference's transition ends.

  Real paper widths (every side type of the config's supernet). The ODE the
  tool integrates is run coarsely here (the tool checks its convergence; the
  README table has the converged curves).
  """

  @parameterized.named_parameters(("resnet20", cifar10_resnet20_50),
                                  ("resnet18", imagenet_resnet18),
                                  ("mobilenet_v2", imagenet_mobilenet_v2))
  @pytest.mark.slow  # ImageNet widths: tens of seconds each
  def test_default_step(self, module):
    key = self._testMethodName.split("test_default_step", 1)[1].lstrip("_")
    cfg = module.get_config()
    sim = phi_schedule.Simulator(cfg, max_columns=1344 if cfg.model.name == "mobilenet_v2"
                                 else 0)
    objective = cfg.search.phi_objective
    # Coarse steps of at most MAX_COARSE transition steps (the tool refines and
    # checks convergence; here a stable, cheap pass is enough).
    per = phi_schedule.MAX_COARSE
    early = sim.integrate(objective, -(-sim.phi_steps // (10 * per)), fraction=0.1)
    self.assertTrue(np.all(np.isfinite(early.model)))
    self.assertLessEqual(early.max_rise, 0.01)
    full = sim.integrate(objective, -(-sim.phi_steps // per))
    self.assertTrue(np.all(np.isfinite(full.model)))
    self.assertLessEqual(full.max_rise, 0.01)
    # Where it ends: the reference's end, within 0.02 of Phi(0).
    self.assertAlmostEqual(full.model[-1], REFERENCE_END[key], delta=0.02)
    # Less than a tenth of the total drop is gone after a tenth of the search
    # phase, i.e. the transition is not over early.
    drop = 1.0 - full.model[-1]
    self.assertGreater(drop, 0.0)
    self.assertLess(1.0 - early.model[-1], 0.25 * drop)
    self.assertGreater(full.drop_step(0.9), 0.1 * full.search_steps)
    if cfg.data.name != "imagenet2012":
      self.assertLess(full.model[-1], 0.85)  # CIFAR: a real transition, as the reference's


class ScheduleTest(parameterized.TestCase):

  def test_every_step_and_ode_agree(self):
    cfg = quick.get_config()
    sim = phi_schedule.Simulator(cfg)
    fine = sim.schedule("exact", coarse_steps=10_000)
    self.assertEqual(fine.integration, "every step")
    self.assertEqual(fine.search_steps, 30 * 22)
    # The ODE (plain steps at rate tau w / (1 - momentum)) against every real
    # momentum step: within 0.03 (measured 0.022; most of it the momentum's
    # ~10-step lag, 1.5% of this short phase), 50% of the drop within 3%.
    coarse = sim.integrate("exact", 400)
    np.testing.assert_allclose(coarse.model, np.interp(coarse.steps, fine.steps, fine.model),
                               atol=0.03)
    self.assertLess(abs(coarse.drop_step(0.5) - fine.drop_step(0.5)), 0.03 * 660)
    rec = fine.record("configs/quick.py")
    self.assertEqual(set(rec["phi_ratio_at"]), {"0.1", "0.25", "0.5", "0.75", "1.0"})
    self.assertLess(rec["step_50pct_drop"], rec["step_90pct_drop"])
    self.assertAlmostEqual(rec["phi_ratio_at"]["1.0"], fine.model[-1], places=5)

  @pytest.mark.slow  # the full ImageNet ResNet-18 simulation beside the partial one
  def test_max_columns_simulates_the_smaller_sides_alone(self):
    # Sides anneal independently, so leaving the large ones out changes
    # nothing for the others: per-side curves equal the full simulation's.
    cfg = imagenet_resnet18.get_config()  # four stage widths: four side sizes
    cfg.search.epochs = cfg.search.warmup_epochs + 1  # a short search phase:
    cfg.search.steps_per_epoch = 200  # 20 transition steps
    full_sim = phi_schedule.Simulator(cfg)
    widths = sorted({sum(c) for _, _, c in full_sim.reps})
    self.assertGreater(len(widths), 1)
    part_sim = phi_schedule.Simulator(cfg, max_columns=widths[-1] - 1)
    full, part = full_sim.schedule("reference"), part_sim.schedule("reference")
    self.assertIsNone(full.partial)
    self.assertLess(part.partial["layers"], part.partial["of_layers"])
    self.assertBetween(part.partial["phi0_share"], 0.0, 1.0)
    self.assertLen(part.partial["skipped_sides"], len(full.sides) - len(part.sides))
    self.assertNotEmpty(part.sides)
    for label, curve in part.sides.items():
      np.testing.assert_allclose(curve, full.sides[label], rtol=1e-5)
    self.assertIn("partial", part.record("configs/imagenet_resnet18.py"))
    self.assertTrue(np.all(np.isfinite(part.model)))

  def test_progress_chunks_change_nothing(self):
    # A long run goes in tenths with progress lines; the curve is the same.
    cfg = quick.get_config()
    whole = phi_schedule.Simulator(cfg).schedule("reference")
    with mock.patch.object(phi_schedule, "PROGRESS_GFLOP", 0.0):
      chunked = phi_schedule.Simulator(cfg).schedule("reference")
    np.testing.assert_allclose(chunked.model, whole.model, rtol=1e-6)
    self.assertLen(chunked.model, len(whole.model))

  def test_phi_every_spaces_the_steps(self):
    cfg = quick.get_config()
    cfg.search.phi_every = 10
    sim = phi_schedule.Simulator(cfg)
    self.assertEqual(sim.phi_steps, 66)
    r = sim.schedule("reference")
    self.assertEqual(r.steps[1], 10)

  @parameterized.parameters(("phi_objective", "eq4", "phi_objective"),
                            ("phi_every", 0, "phi_every"),
                            ("sharing", "ordinal", "transitional"))
  def test_bad_config_is_a_user_error(self, field, value, message):
    cfg = quick.get_config()
    cfg.search[field] = value
    with self.assertRaisesRegex(errors.UserError, message):
      phi_schedule.Simulator(cfg)

  @pytest.mark.slow
  def test_binary_json_lines(self):
    out = tempfile.mkdtemp()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "aps_tf.experiments.phi_schedule", "--config=configs/quick.py",
           f"--workdir={out}", "--json"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    self.assertEqual(res.returncode, 0, res.stderr[-2000:])
    lines = [json.loads(l) for l in res.stdout.splitlines() if l.startswith("{")]
    self.assertEqual([l["objective"] for l in lines], ["exact", "reference"])
    for l in lines:
      self.assertEqual(set(l), {"config", "objective", "search_steps", "phi_ratio_at",
                                "step_50pct_drop", "step_90pct_drop", "max_rise"})
    self.assertTrue(os.path.exists(os.path.join(out, "phi_schedule.png")))
    bad = subprocess.run(cmd[:-1] + ["--config.search.phi_objective=eq4"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    self.assertEqual(bad.returncode, 2, bad.stderr[-2000:])
    self.assertIn("phi_objective", bad.stderr)


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
