"""CIFAR-10 ResNet-20 at 50% FLOPs (paper Table 1; the defaults of configs/base.py).

Compact search: {4,8,16,32,64}, M=124, target 2.05e7 (search convention).
"""

from configs import base


def get_config():
  c = base.get_config("cifar10")
  c.model.name = "resnet20"
  return c
