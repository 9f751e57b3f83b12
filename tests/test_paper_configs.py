"""Every config file loads, resolves, builds, and can reach its FLOPs target;
the paper configs carry the authors' recipes."""

import importlib
import math

from absl.testing import parameterized

from aps_tf import flops
from aps_tf import models
from aps_tf.data import config as data_config
from aps_tf.search import settings

CONFIGS = ("quick", "cifar10_resnet20_50", "cifar10_resnet20_100", "cifar10_resnet56",
           "imagenet_resnet18", "imagenet_mobilenet_v2")
_SHAPES = {"digits": ((16, 16, 1), 10), "cifar10": ((32, 32, 3), 10),
           "imagenet2012": ((224, 224, 3), 1000)}


def _load(name):
  return importlib.import_module(f"configs.{name}").get_config()


class ConfigsTest(parameterized.TestCase):

  @parameterized.parameters(*CONFIGS)
  def test_target_is_reachable(self, name):
    cfg = settings.resolve_config(_load(name))
    data_config.validate(cfg.data)
    shape, classes = _SHAPES[cfg.data.name]
    t = models.topology_from_config(cfg.model, shape, classes)
    conv = cfg.search.reward.flops_convention
    lo = flops.count(t, t.space.widths(t.space.smallest()), conv)["flops"]
    hi = flops.count(t, t.space.widths(t.space.largest()), conv)["flops"]
    self.assertLess(lo, cfg.search.reward.target)
    self.assertLess(cfg.search.reward.target, hi)

  @parameterized.parameters("cifar10_resnet20_50", "cifar10_resnet20_100", "cifar10_resnet56",
                            "imagenet_resnet18")
  def test_resnet_paper_configs_use_the_reference_children(self, name):
    cfg = _load(name)
    shape, classes = _SHAPES[cfg.data.name]
    t = models.topology_from_config(cfg.model, shape, classes)
    self.assertEqual(t.downsample_shortcut, "avgpool_conv")
    self.assertTrue(t.fix_last_width)

  @parameterized.named_parameters(
      ("resnet18", "imagenet_resnet18", dict(
          lr=0.1, lr_schedule="piecewise", lr_decay_epochs=(80, 120), weight_decay=2e-4),
       1.9e9, 5e-3, 13),
      ("mobilenet_v2", "imagenet_mobilenet_v2", dict(
          lr=0.05, lr_schedule="cosine", lr_min=2e-4, weight_decay=4e-5), 3.2e8, 4e-3, 24),
  )
  def test_imagenet_search_recipe(self, name, opt, target, entropy, decisions):
    cfg = _load(name)
    s = cfg.search
    self.assertEqual((s.epochs, s.warmup_epochs, s.batch_size), (160, 80, 2048))
    # An epoch is the reference's iteration count at batch 2048.
    self.assertEqual(s.steps_per_epoch, math.ceil(1_281_167 / 2048))
    for key, value in opt.items():
      self.assertEqual(s[key], value, key)
    self.assertEqual(s.reward.target, target)
    self.assertEqual(s.controller.entropy_weight, entropy)
    t = models.topology_from_config(cfg.model, (224, 224, 3), 1000)
    self.assertEqual(t.space_kind, "reference")
    self.assertEqual(t.space.num_decisions, decisions)

  def test_mobilenet_retraining_warmup_is_1250_iterations(self):
    t = _load("imagenet_mobilenet_v2").train
    self.assertEqual(round(t.warmup_epochs * (1_281_167 // t.batch_size)), 1250)
    self.assertEqual((t.lr * t.warmup_from_fraction, t.lr), (0.2, 0.8))


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
