"""CIFAR-10 ResNet-56 at 50% FLOPs (search convention: 125,485,056 at base).

Space and children as the authors' release (see cifar10_resnet20_50.py).
"""

from aps_tf.configs import base


def get_config():
  c = base.get_config("cifar10")
  c.model.name = "resnet56"
  c.model.space = "reference"
  c.model.downsample_shortcut = "avgpool_conv"
  c.search.reward.target = 0.5 * 125_485_056
  return c
