"""The authors'-release options: pairwise supernet shortcut, kaiming-uniform
meta-weights, the shared controller, the ImageNet controller L2; resuming a
workdir saved before these fields existed."""

import importlib

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from aps_tf import config_check
from aps_tf import errors
from aps_tf import workdir as workdir_lib
from aps_tf.models import supernet
from aps_tf.models import topology as topo
from aps_tf.policy import Policy
from aps_tf.configs import quick

# resnet8 (the cheapest family, stride-1 and strided basic blocks) for the
# unit checks; mobilenet_v2 for its inverted residuals (slow tier).
SMALL = {
    "resnet8": dict(input_shape=(8, 8, 3), candidates=(2, 4, 8)),
    "mobilenet_v2": dict(input_shape=(32, 32, 3), candidates=(2, 4), meta_width=6),
}


def _topology(model="resnet8"):
  kw = dict(SMALL[model])
  return topo.build_topology(model, kw.pop("input_shape"), 10, **kw)


def _net(t, **kw):
  net = supernet.Supernet(t, sharing_mode="transitional", noise_std=1e-2, seed=1, **kw)
  net(tf.zeros((1,) + t.input_shape), tf.constant(t.space.smallest()))
  return net


def _first_equal_width_block(t):
  for i, b in enumerate(t.blocks):
    if isinstance(b, topo.BasicBlock) and b.conv1.stride == 1:
      return i, b
  raise AssertionError("no stride-1 block")


class PairwiseShortcutTest(parameterized.TestCase):

  def test_every_block_has_one_and_none_is_an_aps_layer(self):
    t = _topology()
    aps, pair = _net(t), _net(t, shortcut="pairwise")
    basic = [i for i, b in enumerate(t.blocks) if isinstance(b, topo.BasicBlock)]
    self.assertTrue(all("shortcut" in pair.units[i] for i in basic))
    pair_ids = {id(p) for p in pair.pair_shortcuts()}
    self.assertLen(pair_ids, len(basic))
    self.assertTrue(all(id(pair.units[i]["shortcut"]) in pair_ids for i in basic))
    # Outside Phi: the APS layers are the convs and the classifier only; the
    # 'aps' supernet has APS shortcut convs on top of those.
    n_aps_shortcuts = sum("shortcut" in aps.units[i] for i in basic)
    self.assertGreater(n_aps_shortcuts, 0)
    self.assertLen(pair.aps_layers, len(aps.aps_layers) - n_aps_shortcuts)
    self.assertNotIn("shortcut", [layer.name.rsplit("_", 1)[-1] for layer in pair.aps_layers])

  def test_equal_widths_use_the_pair_conv_and_only_its_row(self):
    t = _topology()
    net = _net(t, shortcut="pairwise")
    i, block = _first_equal_width_block(t)
    arch = tf.constant([1] * t.space.num_decisions)  # width 4 everywhere
    x = tf.random.stateless_normal((2,) + t.input_shape, [1, 2])
    base = net(x, arch).numpy()
    sc = net.units[i]["shortcut"]
    row, _, _ = (int(v) for v in sc.pair(net.slot_indices(arch)))
    k = sc.kernel.numpy()
    other = k.copy()
    other[(row + 1) % k.shape[0]] += 1.0
    sc.kernel.assign(other)
    np.testing.assert_allclose(net(x, arch).numpy(), base, rtol=1e-6, atol=1e-6)
    used = k.copy()
    used[row] += 1.0
    sc.kernel.assign(used)
    self.assertGreater(np.abs(net(x, arch).numpy() - base).max(), 1e-3)
    # Each pair's live block is initialised with its own fan-in (He normal).
    a_out = len(sc.out_candidates)
    for r in range(k.shape[0]):
      ci, co = sc.in_candidates[r // a_out], sc.out_candidates[r % a_out]
      self.assertEqual(np.count_nonzero(k[r]), ci * co)

  @pytest.mark.slow  # a MobileNetV2 supernet's training forward: seconds
  def test_mobilenet_residual_blocks_get_one(self):
    t = _topology("mobilenet_v2")
    net = _net(t, shortcut="pairwise")
    res = [i for i, b in enumerate(t.blocks) if isinstance(b, topo.InvertedResidual)
           and b.residual]
    self.assertNotEmpty(res)
    self.assertTrue(all("shortcut" in net.units[i] for i in res))
    out = net(tf.zeros((1,) + t.input_shape), tf.constant(t.space.largest()), training=True)
    self.assertEqual(out.shape, (1, 10))

  def test_child_weights_give_the_pair_kernel_to_a_projecting_child(self):
    t = _topology()
    net = _net(t, shortcut="pairwise")
    arch = [0] * t.space.num_decisions
    arch[-1] = 2  # the last conv wider than its input: a 1x1 + BN child shortcut
    widths = t.space.widths(arch)
    w = net.child_weights(arch)
    last = [b for b in t.blocks if isinstance(b, topo.BasicBlock)][-1]
    self.assertEqual(topo.shortcut_kind(t, last, widths), "conv_bn")
    k = w[last.name + "_shortcut"][0]
    self.assertEqual(k.shape, (1, 1, widths[last.in_slot], widths[last.conv2.slot]))
    self.assertLen(w[last.name + "_shortcut_bn"], 4)
    first_i, first = _first_equal_width_block(t)
    del first_i
    self.assertNotIn(first.name + "_shortcut", w)  # identity in the child

  def test_bad_values_fail_clearly(self):
    t = _topology()
    with self.assertRaisesRegex(ValueError, "unknown supernet shortcut"):
      supernet.Supernet(t, shortcut="nope")
    with self.assertRaisesRegex(ValueError, "dynamic shapes"):
      supernet.Supernet(t, shortcut="pairwise", static_shapes=True)
    cfg = quick.get_config()
    cfg.model.supernet_shortcut = "nope"
    with self.assertRaisesRegex(errors.ConfigError, "model.supernet_shortcut"):
      config_check.check_model(cfg.model)
    cfg = quick.get_config()
    cfg.model.supernet_shortcut = "pairwise"
    cfg.search.static_shapes = True
    with self.assertRaisesRegex(errors.ConfigError, "search.static_shapes"):
      config_check.check_search(cfg)


class MetaInitTest(parameterized.TestCase):

  def test_kaiming_uniform_bounds_and_spread(self):
    t = _topology()
    he, ku = _net(t), _net(t, meta_init="kaiming_uniform")
    checked = 0
    for a, b in zip(he.aps_layers, ku.aps_layers):
      w_he, w_ku = (np.asarray(layer.kernel) for layer in (a, b))
      if w_he.ndim != 4 or w_he.size < 500:
        continue
      fan_in = np.prod(w_he.shape[:3])
      bound = 1.0 / np.sqrt(fan_in)
      self.assertLessEqual(np.abs(w_ku).max(), bound * (1 + 1e-6))
      # U(+-b) has std b/sqrt(3); He normal has sqrt(2/fan_in) = sqrt(6) x that.
      self.assertAlmostEqual(w_ku.std() / (bound / np.sqrt(3)), 1.0, delta=0.15)
      self.assertGreater(w_he.std() / w_ku.std(), 2.0)
      checked += 1
    self.assertGreater(checked, 3)

  def test_unknown_init_fails(self):
    with self.assertRaisesRegex(ValueError, "unknown meta_init"):
      supernet.Supernet(_topology(), meta_init="nope")


class SharedControllerTest(parameterized.TestCase):

  def test_shapes_zero_bias_and_shared_tokens(self):
    c = Policy((3, 4, 2), hidden=16, seed=3, kind="shared")
    self.assertEqual(tuple(c.head_kernel.shape), (16, 4))
    np.testing.assert_array_equal(c.head_bias.numpy(), np.zeros(4))
    self.assertEqual(c.embedding.input_dim, 1 + 4)
    self.assertEqual(c.embedding.output_dim, 16 - 3 - 1)
    # The same candidate index is the same token at every decision.
    self.assertEqual(int(c.token(0, 1)), int(c.token(2, 1)))
    per = Policy((3, 4, 2), hidden=16, seed=3)
    self.assertNotEqual(int(per.token(0, 1)), int(per.token(2, 1)))

  def test_samples_are_valid_and_rescored_exactly(self):
    c = Policy((3, 4, 2), hidden=16, seed=3, kind="shared")
    arch, logp, _ = c.sample(seed=[1, 2], n=64)
    arch = arch.numpy()
    self.assertTrue(np.all(arch < np.array([3, 4, 2])[None]))
    np.testing.assert_allclose(c.log_prob(arch)[0].numpy(), logp.numpy(), rtol=1e-5)
    # Probabilities over all architectures sum to 1 (masking of short decisions).
    allp = [float(np.exp(c.log_prob([a, b, d])[0][0])) for a in range(3) for b in range(4)
            for d in range(2)]
    self.assertAlmostEqual(sum(allp), 1.0, places=4)

  def test_bad_kind_and_small_hidden_fail(self):
    with self.assertRaisesRegex(ValueError, "unknown controller kind"):
      Policy((3, 4), kind="nope")
    with self.assertRaisesRegex(ValueError, "needs hidden"):
      Policy((3, 4, 2), hidden=4, kind="shared")
    cfg = quick.get_config()
    cfg.search.controller.kind = "nope"
    with self.assertRaisesRegex(errors.ConfigError, "search.controller.kind"):
      config_check.check_search(cfg)


class ConfigTest(parameterized.TestCase):

  @parameterized.parameters("imagenet_resnet18", "imagenet_mobilenet_v2")
  def test_imagenet_controller_l2_is_the_release_strength_on_a_fraction_reward(self, name):
    cfg = importlib.import_module(f"configs.{name}").get_config()
    # The release's 1e-3 acts on a reward in percent: 1e-3 / 100 on a fraction.
    self.assertAlmostEqual(cfg.search.controller.weight_decay, 1e-5)

  def test_saved_run_without_the_new_fields_resumes_only_at_their_old_values(self):
    new = quick.get_config().to_dict()
    old = quick.get_config().to_dict()
    del old["model"]["supernet_shortcut"], old["model"]["meta_init"]
    del old["search"]["controller"]["kind"]
    old = config_check.with_defaults(old).to_dict()  # as check_config reads a saved run
    self.assertEqual(workdir_lib.differences(old, new, ["model", "search"]), [])
    new["model"]["supernet_shortcut"] = "pairwise"
    diff = workdir_lib.differences(old, new, ["model", "search"])
    self.assertEqual([d[0] for d in diff], ["model.supernet_shortcut"])


# A tiny search end to end with every release option on (pair shortcuts
# decayed and trained, the pick written) runs in the tiny search that
# tests/test_search_dynamics.py DriverTest shares between several checks.
