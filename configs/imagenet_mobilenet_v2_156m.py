"""ImageNet MobileNetV2 at the paper's headline budget: Table 2's 156M row.

Table 2 reports APS-T at 156M FLOPs (68.96% top-1, 50.3% fewer than
MobileNetV2). Everything as configs/imagenet_mobilenet_v2.py (the 314M row)
except the reward's target: 1.6e8 FLOPs in the same 'full' convention. The
authors' scripts publish only the 314M row's budget (--max_flops 3.2e8, 2%
above the FLOPs of the architecture it reports); this target keeps that
margin above 156M. `--config=configs/imagenet_mobilenet_v2_156m.py:release`
gives the release's anneal.
"""

from aps_tf.configs import imagenet_mobilenet_v2

TARGET = 1.6e8


def get_config(preset: str = "paper"):
  """The 314M config with the headline row's target."""
  c = imagenet_mobilenet_v2.get_config(preset)
  c.search.reward.target = TARGET
  return c
