"""The fault soak, small: one SIGKILL of the search binary, and the end state
equals an unkilled run, which runs beside the killed one (benchmarks/soak.py
runs 10 and more, of the search, retraining and export). Retraining killed
inside its traced loop and resumed bit-identically: tests/test_train_resume.py
(in process).

Its search scenario is also the test of the search binary killed and resumed as
a user runs it (`python -m aps_tf.search` on configs/quick.py): the resume
says where it restored from, and the finished workdir is the whole search.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

from absl.testing import absltest
import pytest

# Subprocesses: searches and retrainings killed and resumed.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SoakTest(absltest.TestCase):

  def test_killed_search_resumes_to_the_same_end(self):
    out = os.path.join(tempfile.mkdtemp(), "soak")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "benchmarks/soak.py", "--kills=1", "--seed=1",
                        "--scenarios=search", "--search_epochs=3", "--reference_beside",
                        f"--out={out}"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=1800)
    self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
    with open(os.path.join(out, "soak.json")) as f:
      rows = {row["scenario"]: row for row in json.load(f)}
    search = rows["search"]
    self.assertEqual(search["kills"], 1, search)  # the kill happened
    self.assertEqual(search["resumes"], 1, search)
    self.assertTrue(search["identical"], search)
    self.assertTrue(search["same_arch"] and search["same_checkpoint"] and search["steps_once"],
                    search)
    self.assertIn("| search | 1 | 1 | yes |", r.stdout)
    self._check_search_workdir(out, search)

  def _check_search_workdir(self, out, row):
    """The killed-and-resumed search binary's workdir and logs (3 epochs of 3 steps)."""
    workdir = os.path.join(out, "search_killed")
    # The last launch restored the checkpoint a killed launch left mid-run.
    last = os.path.join(out, "search_logs", f"launch{row['resumes'] + 1}.err")
    with open(last) as f:
      restored = re.findall(r"restored \S*ckpt-(\d+) at step (\d+)", f.read())
    self.assertLen(restored, 1, last)
    ckpt, step = map(int, restored[0])
    self.assertEqual(ckpt, step)
    self.assertBetween(step, 1, 8)
    with open(os.path.join(workdir, "ckpt", "checkpoint")) as f:
      self.assertIn('model_checkpoint_path: "ckpt-9"', f.read())
    with open(os.path.join(workdir, "arch.json")) as f:
      arch = json.load(f)
    self.assertEqual(arch["provenance"]["config"], "quick")
    self.assertEqual(arch["provenance"]["step"], 9)
    self.assertEqual(len(arch["decisions"]), 7)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      steps = [json.loads(l)["step"] for l in f if '"kind": "train"' in l]
    self.assertEqual(steps, list(range(1, 10)))  # no duplicate or missing step
    with open(os.path.join(workdir, "config.json")) as f:
      self.assertEqual(json.load(f)["search"]["epochs"], 3)


if __name__ == "__main__":
  absltest.main()
