"""Search-space options: the reference spaces, fix_last_width, per-slot decisions."""

from absl.testing import parameterized
import numpy as np

from aps_tf.models import topology as topo

FACTORS = (1, 1.5, 2, 4, 6, 10, 20)


def _mbv2_reference():
  return topo.build_topology("mobilenet_v2", (224, 224, 3), 1000, space="reference")


class MobileNetReferenceSpaceTest(parameterized.TestCase):

  def test_decision_zero_sets_first_conv_and_first_block_by_index(self):
    sp = _mbv2_reference().space
    self.assertEqual(sp.num_decisions, 24)
    d0 = sp.decisions[0]
    self.assertEqual([sp.slot_names[s] for s in d0.slots], ["conv_first", "block1_project"])
    self.assertEqual(d0.slot_options(0), ((16, 24, 32, 40), 64))
    self.assertEqual(d0.slot_options(1), ((8, 12, 16, 20), 32))
    for a, (first, out) in enumerate(zip((16, 24, 32, 40), (8, 12, 16, 20))):
      arch = [a] + [0] * 23
      widths = sp.widths(arch)
      self.assertEqual(widths[sp.slot_names.index("conv_first")], first)
      self.assertEqual(widths[sp.slot_names.index("block1_project")], out)
      self.assertEqual(sp.decisions_for_widths(widths), arch)

  def test_stage_outputs_hidden_widths_and_meta(self):
    t = _mbv2_reference()
    sp = t.space
    by_name = {d.name: d for d in sp.decisions}
    for stage, f in enumerate(FACTORS[1:], start=2):
      d = by_name[f"stage{stage}_out"]
      self.assertEqual(d.candidates, tuple(int(c * f) for c in (8, 12, 16, 20)))
      self.assertEqual(d.meta_width, int(32 * f))
    expansions = dict(zip(range(1, 8), (1, 3, 3, 3, 6, 6, 6)))
    stage_of = {}
    k = 0
    for stage, (_, _, n, _) in enumerate(topo._MBV2_SETTINGS, start=1):  # pylint: disable=protected-access
      for _ in range(n):
        k += 1
        stage_of[f"block{k}"] = stage
    hidden = [d for d in sp.decisions if d.name.endswith("_hidden")]
    self.assertLen(hidden, 16)
    for block in (b for b in t.blocks if isinstance(b, topo.InvertedResidual)):
      if block.expand is None:
        continue
      d = by_name[f"{block.name}_hidden"]
      e = expansions[stage_of[block.name]]
      self.assertEqual(d.candidates,
                       tuple(int(round(e * c)) for c in sp.slot_candidates(block.in_slot)))
      self.assertEqual(d.meta_width, e * sp.slot_meta_width(block.in_slot))
    self.assertEqual(by_name["conv_last"].candidates, (640, 960, 1280, 1600))
    self.assertEqual(by_name["conv_last"].meta_width, 2560)
    # Controller order: decision 0, then per stage its output before its hiddens.
    names = [d.name for d in sp.decisions]
    self.assertEqual(names[:4], ["conv_first", "stage2_out", "block2_hidden", "block3_hidden"])
    self.assertEqual(names[-3:], ["stage7_out", "block17_hidden", "conv_last"])

  def test_residual_only_when_stride_one_and_meta_widths_match(self):
    residual = [b.residual for b in _mbv2_reference().blocks
                if isinstance(b, topo.InvertedResidual)]
    # Non-first blocks of a stage; block 1 (64 -> 32), block 11 (128 -> 192)
    # and block 17 (320 -> 640) have stride 1 but different meta widths.
    self.assertEqual(residual, [False, False, True, False, True, True, False, True, True, True,
                                False, True, True, False, True, True, False])

  def test_random_archs_round_trip(self):
    sp = _mbv2_reference().space
    rng = np.random.default_rng(0)
    for _ in range(20):
      arch = sp.sample_uniform(rng)
      self.assertEqual(sp.decisions_for_widths(sp.widths(arch)), arch)


class ResNetSpacesTest(parameterized.TestCase):

  def test_resnet18_reference_order_and_fixed_last_output(self):
    t = topo.build_topology("resnet18", (224, 224, 3), 1000, space="reference")
    sp = t.space
    self.assertTrue(t.fix_last_width)
    names = [d.name for d in sp.decisions]
    self.assertEqual(names[:4], ["stem", "stage1_block1_hidden", "stage1_out",
                                 "stage1_block2_hidden"])
    self.assertLen(names, 13)
    last = sp.slot_names.index("stage4_block2_conv2")
    self.assertEqual(sp.fixed, {last: 640})
    out4 = sp.decisions[names.index("stage4_out")]
    self.assertEqual([sp.slot_names[s] for s in out4.slots], ["stage4_block1_conv2"])
    self.assertEqual([d.meta_width for d in sp.decisions[1:]],
                     [128] * 3 + [256] * 3 + [512] * 3 + [1024] * 3)

  def test_resnet18_default_space_unchanged(self):
    sp = topo.build_topology("resnet18", (224, 224, 3), 1000).space
    self.assertEqual([d.name for d in sp.decisions[:4]],
                     ["stem", "stage1_block1_hidden", "stage1_block2_hidden", "stage1_out"])
    self.assertEqual(sp.fixed, {})

  @parameterized.parameters(("resnet20", 19), ("resnet56", 55))
  def test_cifar_fix_last_width(self, model, slots):
    plain = topo.build_topology(model)
    fixed = topo.build_topology(model, fix_last_width=True)
    reference = topo.build_topology(model, space="reference")
    self.assertEqual(plain.space.num_decisions, slots)
    self.assertEqual(fixed.space.num_decisions, slots - 1)
    self.assertEqual(fixed.space.fixed, {slots - 1: 64})
    self.assertEqual(reference.space, fixed.space)
    self.assertEqual(fixed.space.widths(fixed.space.smallest())[-2:], [4, 64])
    # The reference space with fix_last_width=False is the plain one.
    self.assertEqual(topo.build_topology(model, space="reference",
                                         fix_last_width=False).space, plain.space)

  @parameterized.parameters(
      (dict(space="other"), "unknown search space 'other'"),
      (dict(downsample_shortcut="maxpool"), "unknown downsample_shortcut 'maxpool'"),
  )
  def test_bad_options(self, kwargs, message):
    with self.assertRaisesRegex(ValueError, message):
      topo.build_topology("resnet20", **kwargs)

  def test_fix_last_width_is_for_resnets(self):
    with self.assertRaisesRegex(ValueError, "ResNets only"):
      topo.build_topology("mobilenet_v2", (224, 224, 3), 1000, fix_last_width=True)


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
