"""CIFAR-10 ResNet-20 at 100% FLOPs, also the §5.2 analysis space.

Candidates {16,32,64,96}, M=168 (ordinal/transitional; independent needs
M >= 208: --config.model.meta_width=208). Space and children as the authors'
release (see cifar10_resnet20_50.py): last block output fixed at 96.
"""

from aps_tf.configs import base


def get_config():
  c = base.get_config("cifar10")
  c.model.name = "resnet20"
  c.model.candidates = (16, 32, 64, 96)
  c.model.meta_width = 168
  c.model.space = "reference"
  c.model.downsample_shortcut = "avgpool_conv"
  c.search.reward.target = 4.055e7
  return c
