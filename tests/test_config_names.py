"""Tests of aps_tf.config_names: shipped configs runnable by name."""

import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized

from aps_tf import config_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ConfigNamesTest(parameterized.TestCase):

  def test_names_are_the_shipped_configs(self):
    names = config_names.names()
    self.assertContainsSubset(["quick", "cifar10_resnet20_50", "imagenet_mobilenet_v2"], names)
    self.assertNotIn("base", names)
    self.assertNotIn("__init__", names)

  @parameterized.named_parameters(
      ("name", "--config=quick", "configs/quick.py"),
      ("name_with_argument", "--config=cifar10_resnet56:x", "configs/cifar10_resnet56.py:x"))
  def test_name_becomes_the_installed_path(self, arg, want):
    (got,) = config_names.resolve_argv([arg])
    self.assertEqual(got, "--config=" + os.path.join(ROOT, want))

  @parameterized.parameters("--config=configs/quick.py", "--config=/some/where.py",
                            "--config.search.epochs=3", "--workdir=quick", "quick")
  def test_other_arguments_are_untouched(self, arg):
    self.assertEqual(config_names.resolve_argv([arg]), [arg])

  def test_a_file_in_the_working_directory_wins(self):
    cwd = os.getcwd()
    os.chdir(tempfile.mkdtemp())
    try:
      open("quick", "w").close()
      self.assertEqual(config_names.resolve_argv(["--config=quick"]), ["--config=quick"])
    finally:
      os.chdir(cwd)

  def test_unknown_name_lists_the_names(self):
    with self.assertRaisesRegex(config_names.UnknownConfigError,
                                r"--config=cifar11: .*'quick'"):
      config_names.resolve_argv(["--config=cifar11"])


if __name__ == "__main__":
  absltest.main()
