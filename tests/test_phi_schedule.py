"""The Phi schedule tool and the configs' transition defaults at real paper widths."""

import json
import os
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import pytest

from aps_tf import errors
from aps_tf.experiments import phi_schedule
from aps_tf.configs import cifar10_resnet20_50
from aps_tf.configs import imagenet_mobilenet_v2
from aps_tf.configs import imagenet_resnet18
from aps_tf.configs import quick
from tests import test_reference_replay

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Phi(end)/Phi(0) of the release's l1 objective ('reference') at the release's
# own settings, measured with the tool (every step; too slow for the suite):
#   python -m aps_tf.experiments.phi_schedule --config=configs/<config>.py \
#       --objectives=reference [--config.search.phi_lr=1e-3 (ResNet-18) |
#       --config.search.phi_lr=1e-4 --max_columns=1344 (MobileNetV2)]
# (MobileNetV2: on the 33 of 53 layers whose sides have at most 1,344 columns.)
# The tool's 'reference' replay equals an independent numpy implementation of
# the release's update at paper width (ReferenceAnchorTest below and
# tests/test_reference_replay.py). The ImageNet configs' 'release' preset is
# matched to these ends; their default ('paper') anneals.
REFERENCE_END = {"resnet20": 0.296, "resnet18": 0.9906, "mobilenet_v2": 0.9975}


def _simulator(cfg):
  return phi_schedule.Simulator(cfg, max_columns=1344 if cfg.model.name == "mobilenet_v2"
                                else 0)


def _coarse(sim, objective):
  # Coarse steps of at most MAX_COARSE transition steps (the tool refines and
  # checks convergence; here a stable, cheap pass is enough).
  n = -(-int(sim.phi_steps) // phi_schedule.MAX_COARSE)
  return sim.integrate(objective, n)


class PaperWidthsTest(parameterized.TestCase):
  """At real paper widths (every side type of the config's supernet; the ODE
  run coarsely, the converged curves are in docs/results/phi_schedule_*.json):
  the default step anneals over the search phase, neither diverging nor
  finishing early; the ImageNet 'release' preset ends where the release ends."""

  @pytest.mark.slow
  def test_default_step_anneals_resnet20(self):
    self._check_default_step_anneals(cifar10_resnet20_50)

  @parameterized.named_parameters(("resnet18", imagenet_resnet18),
                                  ("mobilenet_v2", imagenet_mobilenet_v2))
  @pytest.mark.sweep  # ImageNet widths: tens of seconds each
  def test_default_step_anneals(self, module):
    self._check_default_step_anneals(module)

  def _check_default_step_anneals(self, module):
    cfg = module.get_config()
    sim = _simulator(cfg)
    full = _coarse(sim, cfg.search.phi_objective)
    self.assertTrue(np.all(np.isfinite(full.model)))
    self.assertLessEqual(full.max_rise, 0.01)
    drop = 1.0 - full.model[-1]
    self.assertGreater(drop, 0.2)  # a real transition
    # Not over early: less than a quarter of the drop after a tenth of the
    # phase (read off the whole phase's curve), 90% of it only after that
    # tenth; about half near a third.
    early = np.interp(0.1 * full.search_steps, full.steps, full.model)
    self.assertLess(1.0 - early, 0.25 * drop)
    self.assertGreater(full.drop_step(0.9), 0.1 * full.search_steps)
    self.assertLess(full.drop_step(0.9), full.search_steps)
    if cfg.data.name == "imagenet2012":
      self.assertBetween(full.drop_step(0.5) / full.search_steps, 0.25, 0.45)

  @pytest.mark.slow  # ImageNet widths: tens of seconds
  def test_release_preset_ends_where_the_release_ends_resnet18(self):
    self._check_release_end(imagenet_resnet18, "resnet18")

  @pytest.mark.sweep
  def test_release_preset_ends_where_the_release_ends_mobilenet_v2(self):
    self._check_release_end(imagenet_mobilenet_v2, "mobilenet_v2")

  def _check_release_end(self, module, key):
    cfg = module.get_config("release")
    self.assertLess(cfg.search.phi_lr, 0.1 * module.get_config().search.phi_lr)
    full = _coarse(_simulator(cfg), cfg.search.phi_objective)
    self.assertAlmostEqual(full.model[-1], REFERENCE_END[key], delta=0.005)
    self.assertLess(full.model[-1], 1.0)

  def test_unknown_preset_is_a_config_error(self):
    with self.assertRaisesRegex(errors.ConfigError, "unknown Phi preset 'fast'.*release"):
      imagenet_resnet18.get_config("fast")


class ReferenceAnchorTest(absltest.TestCase):
  """The tool's 'reference' curve at a paper-width side equals the independent
  numpy replay of the release's update (tests/test_reference_replay.py)."""

  @pytest.mark.slow  # a first-stage ImageNet simulation: ~15 s
  def test_tool_reference_side_equals_the_independent_replay(self):
    cfg = imagenet_resnet18.get_config("release")
    cfg.search.phi_lr = 1e-3  # the release's tau
    cfg.search.epochs = cfg.search.warmup_epochs + 1
    cfg.search.steps_per_epoch = 2000  # 200 transition steps
    sim = phi_schedule.Simulator(cfg, max_columns=224)  # the first stage's sides
    r = sim.schedule("reference")
    init, _, cands = sim.reps[0]
    flat = np.concatenate([init[a, :, :c] for a, c in enumerate(cands)], axis=1)
    s = cfg.search
    _, sums = test_reference_replay.release_replay(
        flat, sim.phi_steps, candidates=cands, lr=s.phi_lr, weight=s.phi_weight,
        momentum=s.phi_momentum, weight_decay=s.phi_weight_decay)
    want = np.array(sums) / sums[0]
    got = r.sides[sim.side_label(0)]
    self.assertEqual(sim.phi_steps, 200)
    self.assertGreater(1.0 - want[-1], 1e-3)  # it moves more than the tolerance
    np.testing.assert_allclose(got, want, atol=1e-5)


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

  def test_search_forecast_agrees_with_the_whole_model(self):
    # The forecast a search logs (smallest sides, coarse ODE) against the
    # tool's replay of every side type.
    cfg = quick.get_config()
    got = phi_schedule.search_forecast(cfg)
    whole = phi_schedule.Simulator(cfg).schedule("exact")
    self.assertFalse(got["warns"])
    self.assertAlmostEqual(got["forecast_phi_ratio_end"], whole.model[-1], delta=0.03)
    cfg.search.phi_lr = 1e-6
    self.assertTrue(phi_schedule.search_forecast(cfg)["warns"])

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
  absltest.main()
