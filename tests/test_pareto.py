"""The search-vs-width-multiplier experiment (`aps_tf.experiments.pareto`) and
the release-options study's config arms."""

import json
import os
import tempfile

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from aps_tf import cli
from aps_tf import config_check
from aps_tf import errors
from aps_tf import fileio
from aps_tf.experiments import pareto
from aps_tf.experiments import release_options
from aps_tf.experiments import reward_and_pick as rp
from aps_tf.configs import pareto_digits


class RerunCommandTest(parameterized.TestCase):
  """The command an experiment's result record names (aps_tf.cli.rerun_command)."""

  @parameterized.named_parameters(
      ("flags_as_given", ["p", "--seeds=0,1", "--config.train.epochs=3"],
       "--seeds=0,1 --config.train.epochs=3"),
      ("workdir_and_dropped_flags_left_out",
       ["p", "--workdir=/home/me/w", "--seeds=2", "--notes=x y", "--record=r.json",
        "--report_only"], "--seeds=2"),
      ("shell_quoted", ["p", "--config.search.lr_decay_epochs=(2,)", "--seeds=0"],
       "'--config.search.lr_decay_epochs=(2,)' --seeds=0"),
      ("spaced_values_and_negated_booleans",
       ["p", "--workdir", "/tmp/w", "--noreport_only", "--record", "r.json", "--arms=a,b"],
       "--arms=a,b"))
  def test_rerun_command(self, argv, flags_kept):
    got = cli.rerun_command("aps_tf.experiments.pareto", "workdirs/pareto", argv,
                            drop=("record", "notes", "report_only"))
    self.assertEqual(got, "python -m aps_tf.experiments.pareto --workdir=workdirs/pareto "
                     + flags_kept)


class ParetoPartsTest(parameterized.TestCase):

  def test_uniform_widths_fit_the_budget_and_scale_the_base(self):
    cfg = pareto_digits.get_config()
    base = pareto.base_flops(cfg)
    self.assertEqual(base, pareto.flops_of(cfg, pareto._topology(cfg).base_widths))
    prev = 0
    for frac in (0.25, 0.5, 0.75, 1.0):
      widths, m = pareto.uniform_widths(cfg, frac * base)
      f = pareto.flops_of(cfg, widths)
      self.assertLessEqual(f, frac * base)
      self.assertGreater(f, 0.85 * frac * base)  # the largest multiplier, not any
      self.assertGreater(f, prev)
      prev = f
      np.testing.assert_array_equal(
          widths, [max(1, round(m * b)) for b in pareto._topology(cfg).base_widths])
    self.assertEqual(pareto.uniform_widths(cfg, base)[0],
                     list(pareto._topology(cfg).base_widths))
    with self.assertRaisesRegex(errors.UserError, "below the narrowest"):
      pareto.uniform_widths(cfg, 1.0)

  def test_summaries(self):
    rows = [{"arm": arm, "budget": 0.5, "seed": s, "flops": 100 + s,
             "test_accuracy": acc}
            for arm, accs in (("uniform", (0.9, 0.92, 0.94)), ("APS-T", (0.95, 0.95, 0.98)))
            for s, acc in enumerate(accs)]
    for r in rows[3:]:
      r["search_reward_accuracy"] = 0.5 + 0.1 * r["seed"]
    out = {r["arm"]: r for r in pareto.summarize(rows)}
    self.assertNotIn("search_reward_accuracy_mean", out["uniform"])
    self.assertAlmostEqual(out["APS-T"]["search_reward_accuracy_mean"], 0.6)
    self.assertEqual(list(out), ["uniform", "APS-T"])
    self.assertAlmostEqual(out["uniform"]["test_accuracy_mean"], 0.92)
    self.assertAlmostEqual(out["uniform"]["test_accuracy_std"], 0.02)
    self.assertEqual((out["APS-T"]["test_accuracy_min"], out["APS-T"]["test_accuracy_max"]),
                     (0.95, 0.98))
    self.assertEqual(out["APS-T"]["flops_max"], 102)
    ranking = pareto.summarize_ranking([
        {"mode": "APS-O", "seed": 0, "n": 3, "kendall_tau_reward": 1.0,
         "kendall_tau_reward_accuracy": 1.0, "test_accuracy": [0.9, 0.95, 0.97]},
        {"mode": "APS-O", "seed": 1, "n": 3, "kendall_tau_reward": -1 / 3,
         "kendall_tau_reward_accuracy": 0.0, "test_accuracy": [0.9, 0.9, 0.92]}])
    self.assertLen(ranking, 1)
    self.assertAlmostEqual(ranking[0]["kendall_tau_reward_mean"], 1 / 3)
    self.assertAlmostEqual(ranking[0]["kendall_tau_reward_min"], -1 / 3)
    self.assertAlmostEqual(ranking[0]["test_accuracy_spread_mean"], (0.07 + 0.02) / 2)

  def test_a_search_starts_from_the_warm_up_checkpoint(self):
    with tempfile.TemporaryDirectory() as d:
      v = tf.Variable(3.0)
      ckpt = tf.train.Checkpoint(v=v)
      mgr = tf.train.CheckpointManager(ckpt, os.path.join(d, "warm", "ckpt"), 3)
      mgr.save(checkpoint_number=7)
      v.assign(5.0)
      mgr.save(checkpoint_number=9)
      sdir = os.path.join(d, "search")
      pareto.seed_from_warm_up(os.path.join(d, "warm"), sdir)
      latest = tf.train.latest_checkpoint(os.path.join(sdir, "ckpt"))
      self.assertEqual(os.path.basename(latest), "ckpt-9")
      self.assertTrue(latest.startswith(sdir))  # relative: no link back to the warm-up
      w = tf.Variable(0.0)
      tf.train.Checkpoint(v=w).restore(latest).assert_consumed()
      self.assertEqual(float(w), 5.0)
      v.assign(1.0)
      mgr.save(checkpoint_number=11)
      pareto.seed_from_warm_up(os.path.join(d, "warm"), sdir)  # already seeded: unchanged
      self.assertEqual(os.path.basename(tf.train.latest_checkpoint(
          os.path.join(sdir, "ckpt"))), "ckpt-9")

  def test_report_only_starts_nothing(self):
    cfg = pareto_digits.get_config()
    with tempfile.TemporaryDirectory() as d:
      pareto.REPORT_ONLY["on"] = True
      try:
        self.assertEqual(pareto.run_pareto(cfg, d, [0], [0.5], ["APS-T"], None), [])
        self.assertEqual(pareto.run_ranking(cfg, d, [0], 0.5, ["APS-T"], None), [])
      finally:
        pareto.REPORT_ONLY["on"] = False
      self.assertEqual(os.listdir(d), [])

  def test_release_summary_compares_picks_with_the_default_and_between_seeds(self):
    rows = [{"arm": arm, "seed": seed, "decisions": decisions, "flops": 10, "reward": 0.5,
             "reward_accuracy": 0.6, "top_n_mean_reward": 0.5,
             "search_reward_accuracy_last_quarter": 0.5, "test_accuracy": 0.9}
            for arm, seed, decisions in (("default", 0, [0, 0, 0]), ("default", 1, [0, 1, 1]),
                                         ("kaiming_uniform", 0, [1, 0, 0]),
                                         ("kaiming_uniform", 1, [1, 1, 2]))]
    out = {r["arm"]: r for r in release_options.summarize(rows)}
    self.assertEqual(out["default"]["decisions_differing_from_default_mean"], 0.0)
    self.assertEqual(out["default"]["decisions_differing_between_seeds_mean"], 2.0)
    self.assertEqual(out["kaiming_uniform"]["decisions_differing_from_default_mean"], 1.5)
    self.assertEqual(out["kaiming_uniform"]["decisions_differing_between_seeds_mean"], 2.0)

  def test_release_arms_set_their_field_only(self):
    cfg = pareto_digits.get_config()
    base = config_check.flatten(cfg.to_dict())
    for arm, (overrides, _) in release_options.ARMS.items():
      got = config_check.flatten(release_options.arm_config(cfg, arm).to_dict())
      self.assertEqual({k: v for k, v in got.items() if v != base[k]}, overrides, arm)


@pytest.mark.slow
class ParetoEndToEndTest(parameterized.TestCase):
  """A tiny run of every step: warm-up, a seeded search, pick, retrains; resume."""

  def test_tiny_run_and_resume(self):
    cfg = pareto_digits.get_config()
    # ResNet-8 (the tests' cheapest search model, tests/search_configs.py) over
    # the experiment's candidates: every step's traces and retrains are smaller
    # than ResNet-20's; the steps and their records are the same.
    cfg.model.name = "resnet8"
    cfg.search.steps_per_epoch = 2
    cfg.search.epochs = 2
    cfg.search.warmup_epochs = 1
    cfg.search.lr_decay_epochs = (2,)
    cfg.search.batch_size = 16
    cfg.search.top_n = 2
    cfg.search.beam_width = 2
    cfg.search.rescore_batches = 2
    cfg.search.checkpoint_every_steps = 2
    cfg.train.epochs = 1
    cfg.train.batch_size = 256
    with tempfile.TemporaryDirectory() as d:
      seen = []
      rows = pareto.run_pareto(cfg, d, [0], [0.5], ["APS-T"], seen.append)
      self.assertEqual([r["arm"] for r in rows], ["uniform", "APS-T"])
      self.assertLen(seen, 2)
      for r in rows:
        self.assertBetween(r["test_accuracy"], 0.0, 1.0)
        self.assertEqual(r["flops"], pareto.flops_of(cfg, r["widths"]))
      # The searched arm's supernet accuracy as its controller saw it.
      self.assertNotIn("search_reward_accuracy", rows[0])
      sdir = pareto.search_dir(d, "APS-T", 0, 0.5)
      self.assertEqual(rows[1]["search_reward_accuracy"], rp.search_reward_accuracy(sdir))
      self.assertBetween(rows[1]["search_reward_accuracy"], 0.0, 1.0)
      # The search resumed from the warm-up: its own metrics start after it.
      steps = [json.loads(line)["step"] for line in fileio.read_text(
          os.path.join(sdir, "metrics.jsonl")).splitlines() if '"train"' in line]
      self.assertGreater(min(steps), 2)
      again = pareto.run_pareto(cfg, d, [0], [0.5], ["APS-T"], lambda rows: None)
      self.assertEqual(again, rows)  # finished runs are reused as they are
