"""The APS-T anneal forecast and check (aps_tf.anneal); its place in a search is
checked in tests/test_search_dynamics.py (DriverTest)."""

from absl.testing import absltest
import pytest

from aps_tf import anneal
from aps_tf.experiments import transition_speed
from aps_tf.search import task as task_lib
from configs import quick
from tests.search_configs import tiny_config


class ForecastTest(absltest.TestCase):

  @pytest.mark.slow  # builds a search task and traces its Phi step
  def test_forecast_is_the_search_s_own_transition(self):
    # Few steps: the forecast replays every configured step (momentum
    # included); P/Q see no data, so on every side it equals what the
    # search's own Phi steps do, and one side per (candidates, meta width)
    # (other noise draws) comes close.
    sr = task_lib.SearchTask.from_config(tiny_config(phi_lr=0.02))
    phi0 = float(sr.net.phi().numpy())
    exact = anneal.forecast(sr.phi_opt, sr.cfg.search, 6, all_sides=True)
    rep = anneal.forecast(sr.phi_opt, sr.cfg.search, 6)
    self.assertEqual((rep.layers, rep.phi0_share), (rep.of_layers, 1.0))
    for _ in range(6):
      sr.phi_step()
    observed = float(sr.net.phi().numpy()) / phi0
    self.assertLess(observed, 0.99)
    self.assertAlmostEqual(exact.ratio, observed, delta=1e-4)
    self.assertAlmostEqual(rep.ratio, observed, delta=0.02)

  @pytest.mark.slow  # builds the quick config's search task (about a second)
  def test_normal_config_does_not_warn(self):
    sr = task_lib.SearchTask.from_config(quick.get_config())
    check = anneal.AnnealCheck.for_searcher(sr)
    self.assertIsNone(check.warning)
    self.assertLess(check.forecast.ratio, 1.0 - anneal.MIN_FALL)
    first = check.record(sr.warmup_steps + 1)
    self.assertIsNone(first["phi_anneal_warning"])
    self.assertNotIn("phi_anneal_warning", check.record(sr.warmup_steps + 2))
    self.assertEqual(check.record(sr.warmup_steps), {})  # warm-up records: nothing

  def test_no_check_without_transition(self):
    sr = task_lib.SearchTask.from_config(tiny_config("ordinal"))
    self.assertIsNone(anneal.AnnealCheck.for_searcher(sr))


class TransitionSpeedTest(absltest.TestCase):

  def test_speed_depends_on_noise_and_columns_per_row(self):
    fast, slow = (transition_speed.measure((4, 6, 8), 12, noise, tau_steps=40.0, num=40)
                  for noise in (5e-2, 1e-3))
    self.assertLess(fast["S_ratio_at_9"], slow["S_ratio_at_9"] - 0.05)
    square = transition_speed.measure((4, 6, 8), 18, 5e-2, tau_steps=40.0, num=40)
    # 18 columns on 12 rows cannot all separate: a higher floor than on 18 rows.
    self.assertLess(square["S_ratio_at_40"], fast["S_ratio_at_40"])


# The check in a search (a tiny phi_lr warns in the log and in metrics.jsonl,
# forecast and observed agreeing) runs in the tiny search that
# tests/test_search_dynamics.py DriverTest shares between several checks.


if __name__ == "__main__":
  absltest.main()
