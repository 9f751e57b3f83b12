"""benchmarks/search_step.py runs end to end at a tiny size and ends with its JSON."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

import pytest

# A subprocess: the benchmark end to end.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("traces", "supernet_vs_dense_ratio", "supernet_vs_dense_max", "host_overhead",
        "phi_share", "search_iter_s", "archs_file", "xla_compile_s", "xla_step_vs_static",
        "candidates_iter_s", "static_step_s", "dynamic_step_s")


class SearchStepBenchmarkTest(unittest.TestCase):

  def test_smoke(self):
    d = tempfile.mkdtemp()
    archs_file = os.path.join(d, "archs.json")
    cmd = [sys.executable, "benchmarks/search_step.py", "--json", "--model=resnet8",
           "--candidates=2,4,8", "--meta_width=14", "--batch_size=4", "--image_size=8",
           "--iters=1", "--num_archs=2", "--trace_archs=4", "--static_archs=1", "--noxla",
           "--candidate_counts=3", "--loop_steps=4", "--loop_rounds=1",
           f"--archs_file={archs_file}"]
    # The test runtime (tests/helpers/runtime_env.py), inherited: this checks
    # what the benchmark computes and reports, not its times.
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    self.assertEqual(r.returncode, 0, r.stderr[-3000:])
    res = json.loads(r.stdout.strip().splitlines()[-1])
    for key in KEYS:
      self.assertIn(key, res)
    self.assertEqual(res["traces"], 1)
    self.assertEqual(res["traces_after"], 1)  # the fixed archs reuse the same trace
    self.assertEqual(res["loop_traces"], 1)  # the traced multi-step search loop
    self.assertEqual(res["num_archs"], 2)
    with open(archs_file) as f:
      archs = json.load(f)["archs"]
    self.assertEqual(len(archs), 2)
    self.assertTrue(all(a["flops"] > 0 and len(a["widths"]) > 0 for a in archs))
    self.assertEqual(len(res["supernet_vs_dense_per_arch"]), 2)
    self.assertGreater(res["search_iter_s"], 0)


if __name__ == "__main__":
  unittest.main()
