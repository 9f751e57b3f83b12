"""Experiments: the README figure, the demo summary, the sharing analysis."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import parameterized
import numpy as np
import pytest

from aps_tf import archfile
from aps_tf import flops
from aps_tf import sharing
from aps_tf.experiments import compress
from aps_tf.experiments import figure
from aps_tf.experiments import sharing_analysis
from aps_tf.experiments import summary
from aps_tf.models import topology as topo
from aps_tf.configs import quick

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class FigureTest(parameterized.TestCase):

  def test_anneal_reaches_independent_minimum(self):
    # Within 0.05 of the minimum by step ~90 (0.01 at step 100): 120 steps, not 300.
    _, history = figure.anneal(120)
    ordinal = float(sharing.sharing_sum(sharing.init_projection(
        "ordinal", figure.CANDIDATES, figure.META)))
    independent = float(sum(figure.CANDIDATES))
    self.assertAlmostEqual(history[0], ordinal, delta=0.1)
    self.assertAlmostEqual(history[-1], independent, delta=0.05)

  def test_draw_writes_png(self):
    out = os.path.join(tempfile.mkdtemp(), "fig.png")
    figure.draw(out, 20)
    with open(out, "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


class SummaryTest(parameterized.TestCase):

  def test_table_from_run_files(self):
    root = tempfile.mkdtemp()
    search, train, export_dir = (os.path.join(root, d) for d in ("s", "t", "e/m/3"))
    for d in (search, train, export_dir, os.path.join(root, "e/m/1")):
      os.makedirs(d)
    t = topo.build_topology("resnet20", (16, 16, 1), 10, candidates=(4, 8, 16, 32))
    decisions = [1] * t.space.num_decisions
    arch = archfile.make(t, t.space.widths(decisions), decisions,
                         search_space={"candidates": [4, 8, 16, 32]})
    archfile.save(arch, os.path.join(search, "arch.json"))
    with open(os.path.join(train, "metrics.json"), "w") as f:
      json.dump({"test_accuracy": 0.9321}, f)
    with open(os.path.join(export_dir, "export_report.json"), "w") as f:
      json.dump({"results": [{"format": "tflite_int8", "file": "tflite/model_int8.tflite",
                              "size_bytes": 2048, "top1_agreement": 0.99,
                              "accuracy": 0.93}]}, f)
    self.assertEqual(summary.latest_version_dir(os.path.join(root, "e/m")), export_dir)
    text = summary.summarize(search, train, export_dir)
    self.assertIn("| stem | 16 | 8 |", text)
    base = flops.count(t, t.base_widths)["flops"]
    self.assertIn(f"| FLOPs (full) | {base:,} | {arch['flops']['full']:,} | "
                  f"{arch['flops']['full'] / base:.2f} |", text)
    self.assertIn("0.9321", text)
    self.assertIn("| tflite_int8: tflite/model_int8.tflite | 2.0 | 0.990 | 0.930 |", text)


class CompressRecordTest(parameterized.TestCase):
  """The compress study's record says which reward its searches ran under."""

  @parameterized.parameters(None, 0.1)
  def test_record_names_the_reward_alpha(self, alpha):
    acc = {"mean": 0.99, "std": 0.001, "min": 0.98, "max": 1.0, "n": 3}
    out = {"pretrained": {"test_accuracy": 0.98, "flops": 1e6},
           "arms": {"uniform_from_pretrained": {"test_accuracy": acc,
                                                "flops_fraction": dict(acc, mean=0.5)}},
           "settings": {"seeds": [0, 1, 2], "reward_alpha": alpha}}
    rec = compress.record(out, "python -m aps_tf.experiments.compress ...")
    self.assertEqual("alpha=0.1" in rec["title"], alpha is not None)
    self.assertEqual(rec["results"]["uniform_from_pretrained_flops_fraction_mean"], 0.5)
    self.assertEqual(rec["seeds"], [0, 1, 2])


class SharingAnalysisTest(parameterized.TestCase):

  @parameterized.parameters(*sharing.MODES)
  def test_unconstrained_reward(self, mode):
    cfg = sharing_analysis.unconstrained(quick.get_config(), mode)
    self.assertEqual(cfg.search.sharing, mode)
    self.assertEqual((cfg.search.reward.alpha, cfg.search.reward.beta), (0.0, 0.0))

  @pytest.mark.slow
  def test_runs_end_to_end(self):
    # The binary on a tiny search (resnet8 as tests/search_configs.py, 3 epochs
    # of 3 steps, one analysis at the end; quick's candidates), not quick's
    # resnet20 at 22 steps an epoch: the same records and files. phi_lr 1.0 so
    # that Phi visibly falls in the 6 transition steps (by ~4e-4 of Phi(0);
    # quick's 0.06 moves it by under 5e-5).
    workdir = tempfile.mkdtemp()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run(
        [sys.executable, "-m", "aps_tf.experiments.sharing_analysis", f"--workdir={workdir}",
         "--modes=ordinal,transitional", "--progress=false",
         "--config.model.name=resnet8",
         "--config.search.batch_size=16", "--config.search.steps_per_epoch=3",
         "--config.search.epochs=3", "--config.search.warmup_epochs=1",
         "--config.search.lr_decay_epochs=(2,)", "--config.search.checkpoint_every_steps=100",
         "--config.search.log_every_steps=1", "--config.search.analysis_every_steps=9",
         "--config.search.top_n=2", "--config.search.beam_width=3",
         "--config.search.phi_lr=1.0", "--config.search.rescore=false"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    with open(os.path.join(workdir, "sharing_analysis.json")) as f:
      results = json.load(f)
    self.assertCountEqual(results, ["ordinal", "transitional"])
    # Transitional anneals Phi below the ordinal maximum; ordinal stays at it.
    self.assertLess(results["transitional"]["final_phi"], results["ordinal"]["final_phi"])
    probs = np.asarray(results["ordinal"]["final_probabilities"])
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    self.assertTrue(os.path.exists(os.path.join(workdir, "sharing_analysis.png")))
    with open(os.path.join(workdir, "sharing_analysis.md")) as f:
      self.assertIn("| transitional |", f.read())


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
