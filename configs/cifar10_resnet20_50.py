"""CIFAR-10 ResNet-20 at 50% FLOPs (paper Table 1).

Compact search: {4,8,16,32,64}, M=124, target 2.05e7 (search convention),
600 epochs with 200 of warm-up, batch 256, lr 0.1 x0.1 at 300 and 450, wd 2e-4
(all from `base`). Space and children as the authors' release: the last
block's output and the classifier input are fixed at 64 (`space='reference'`,
so 18 decisions: the reference still samples a 19th whose width the network
ignores), and strided shortcuts of the retrained child are 2x2 average pool +
1x1 conv without BN.

Kept different: the FLOPs the reward sees are those of the network built
(last block at 64); the reference's lookup table counts that layer at the
sampled, unused width, so its "2.05e7" admits slightly larger bodies.
"""

from aps_tf.configs import base


def get_config():
  c = base.get_config("cifar10")
  c.model.name = "resnet20"
  c.model.space = "reference"
  c.model.downsample_shortcut = "avgpool_conv"
  return c
