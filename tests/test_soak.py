"""The fault soak, small: 2 SIGKILLs each of the search and of retraining, and
the end state equals an unkilled run (benchmarks/soak.py runs 10 and more)."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import pytest

# Subprocesses: searches and retrainings killed and resumed.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SoakTest(absltest.TestCase):

  def test_two_kills_search_and_train(self):
    out = os.path.join(tempfile.mkdtemp(), "soak")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "benchmarks/soak.py", "--kills=2", "--seed=1",
                        "--scenarios=search,train", "--search_epochs=3", "--train_epochs=1",
                        f"--out={out}"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=1800)
    self.assertEqual(r.returncode, 0, r.stdout[-3000:] + r.stderr[-3000:])
    with open(os.path.join(out, "soak.json")) as f:
      rows = {row["scenario"]: row for row in json.load(f)}
    search, train = rows["search"], rows["train"]
    for row in (search, train):
      self.assertEqual(row["kills"], 2, row)  # both kills happened
      self.assertEqual(row["resumes"], 2, row)
      self.assertTrue(row["identical"], row)
    self.assertTrue(search["same_arch"] and search["same_checkpoint"] and search["steps_once"],
                    search)
    self.assertTrue(train["same_weights"] and train["same_metrics"], train)
    self.assertIn("| search | 2 | 2 | yes |", r.stdout)


if __name__ == "__main__":
  absltest.main()
