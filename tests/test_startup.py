"""Tests of aps_tf.startup: TensorFlow's start-up noise dropped, real errors kept."""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

from absl.testing import absltest
from absl.testing import parameterized
import pytest

from aps_tf import startup
from tests.helpers import runtime_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUINIT = ("E0000 00:00:1796023902.394142    6618 cuda_platform.cc:52] failed call to cuInit: "
          "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n")
INFO = ("I0000 00:00:1796023899.437934    6618 cudart_stub.cc:31] Could not find cuda drivers "
        "on your machine, GPU will not be used.\n")
OTHER_ERROR = "E0000 00:00:1796023902.394142    6618 op_kernel.cc:1] real trouble\n"
BANNER = ("WARNING: All log messages before absl::InitializeLog() is called are written to "
          "STDERR\n")


def _python(code, **env):
  return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                        text=True, cwd=ROOT, timeout=300,
                        env=runtime_env.user_env(PYTHONPATH=ROOT, **env))


class TestRuntimeTest(absltest.TestCase):
  """The tests run with tests/helpers/runtime_env.py's settings (`user_env` undoes them) and
  keep their temporary files in the session's directory."""

  def test_applied_here_and_undone_for_a_user_subprocess(self):
    before = json.loads(os.environ[runtime_env.BEFORE_ENV])
    user = runtime_env.user_env()
    for key, value in runtime_env.TEST_RUNTIME.items():
      # A value the environment already held (even an empty one) is kept.
      self.assertEqual(os.environ[key], value if before[key] is None else before[key], key)
      self.assertEqual(user.get(key), before[key], key)
    self.assertNotIn(runtime_env.BEFORE_ENV, user)

  def test_temporary_files_go_to_the_session_directory(self):
    root = tempfile.gettempdir()
    self.assertTrue(os.path.basename(root).startswith("aps_tf_test_tmp_"), root)
    self.assertEqual(os.environ["TMPDIR"], root)
    r = subprocess.run([sys.executable, "-c", "import tempfile; print(tempfile.mkdtemp())"],
                       capture_output=True, text=True, check=True)
    self.assertEqual(os.path.dirname(r.stdout.strip()), root)


class KeepLineTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("cuinit_without_gpu", CUINIT, False, 2, False),
      ("cuinit_with_gpu", CUINIT, True, 2, True),
      ("cuinit_without_gpu_level0", CUINIT, False, 0, False),
      ("other_error", OTHER_ERROR, False, 2, True),
      ("info_level2", INFO, False, 2, False),
      ("info_level0", INFO, False, 0, True),
      ("banner_level1", BANNER, False, 1, False),
      ("banner_level0", BANNER, False, 0, True),
      ("traceback", "Traceback (most recent call last):\n", False, 3, True),
      ("warning", "W0000 00:00:1.5  1 x.cc:2] careful\n", False, 2, True))
  def test_keep_line(self, line, gpu, level, kept):
    self.assertEqual(startup.keep_line(line, gpu_present=gpu, level=level), kept)


class FilteredStderrTest(absltest.TestCase):

  def test_only_dropped_lines_are_dropped_in_order(self):
    r = _python(f"""
        import os, sys
        from aps_tf import startup
        keep = lambda line: startup.keep_line(line, gpu_present=False, level=2)
        with startup.filtered_stderr(keep):
          os.write(2, {INFO!r}.encode())
          os.write(2, {CUINIT!r}.encode())
          os.write(2, {OTHER_ERROR!r}.encode())
          print("python stderr", file=sys.stderr)
          os.write(2, b"no newline at the end")
        print("after", file=sys.stderr)
        """)
    self.assertEqual(r.returncode, 0, r.stderr)
    self.assertEqual(r.stderr, OTHER_ERROR + "python stderr\nno newline at the endafter\n")

  def test_an_exception_inside_still_restores_stderr(self):
    r = _python("""
        from aps_tf import startup
        try:
          with startup.filtered_stderr(lambda line: True):
            raise KeyError("inside")
        except KeyError:
          pass
        raise SystemExit("visible")
        """)
    self.assertEqual(r.returncode, 1)
    self.assertEqual(r.stderr, "visible\n")


@pytest.mark.slow
class QuietStartupTest(absltest.TestCase):

  def test_flops_binary_stderr_is_empty(self):
    r = subprocess.run([sys.executable, "-m", "aps_tf.flops", "--model=resnet20", "--json"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env=runtime_env.user_env(PYTHONPATH=ROOT))
    self.assertEqual(r.returncode, 0, r.stderr)
    self.assertEqual(r.stderr, "")
    self.assertIn('"flops": 40813194', r.stdout)

  def test_tensorflow_start_up_through_the_cli_hook(self):
    r = _python("""
        import sys
        from aps_tf import startup
        startup.install()
        import tensorflow as tf
        print(tf.reduce_sum(tf.ones([3])).numpy())
        print("kept", file=sys.stderr)
        assert startup._finder not in sys.meta_path
        """, TF_CPP_MIN_LOG_LEVEL="2")
    self.assertEqual(r.returncode, 0, r.stderr)
    self.assertEqual(r.stdout.strip(), "3.0")
    self.assertNotIn("cuInit", r.stderr)
    if not startup.gpu_device_nodes():
      self.assertEqual(r.stderr, "kept\n")


if __name__ == "__main__":
  absltest.main()
