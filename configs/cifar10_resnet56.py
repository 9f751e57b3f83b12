"""CIFAR-10 ResNet-56 at 50% FLOPs."""

from configs import base


def get_config():
  c = base.get_config("cifar10")
  c.model.name = "resnet56"
  c.search.reward.target = 0.5 * 125_485_056
  return c
