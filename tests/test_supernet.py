"""Supernets: one trace for all architectures, static parity, child parity, Phi step.

The fast tier keeps unit checks on resnet8 (the cheapest family: strided and
stride-1 basic blocks, identity and projection shortcuts); every other family
and mode, and anything that traces a training step, is in the slow tier.
"""

import tempfile

from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from aps_tf.models import dense
from aps_tf.models import supernet
from aps_tf.models import topology as topo

# Small spaces so every family runs in seconds; same code paths as the paper's.
SMALL = {
    "resnet20": dict(input_shape=(16, 16, 1), candidates=(2, 4, 8)),
    "resnet18": dict(input_shape=(32, 32, 3), candidates=(2, 4), meta_width=8),
    "mobilenet_v2": dict(input_shape=(32, 32, 3), candidates=(2, 4), meta_width=6),
}
TINY = {"resnet8": dict(input_shape=(8, 8, 3), candidates=(2, 4, 8))}


def _topology(model):
  kw = dict({**SMALL, **TINY}[model])
  return topo.build_topology(model, kw.pop("input_shape"), 10, **kw)


def _net(t, mode, **kw):
  net = supernet.Supernet(t, sharing_mode=mode, noise_std=1e-2, seed=1, **kw)
  net(tf.zeros((1,) + t.input_shape), tf.constant(t.space.smallest()))
  return net


class SupernetTest(parameterized.TestCase):

  # Every sharing mode on resnet8 (the cheapest trace), and MobileNetV2's
  # depthwise inverted residuals.
  @parameterized.parameters(("resnet8", "ordinal"), ("resnet8", "independent"),
                            ("resnet8", "transitional"), ("mobilenet_v2", "ordinal"))
  @pytest.mark.slow  # traces a training step (seconds to tens of seconds)
  def test_one_trace_for_every_architecture(self, model, mode):
    self._check_one_trace(model, mode)

  # ResNet-18's basic blocks and strides: the suite runs them on resnet8.
  @pytest.mark.sweep
  def test_one_trace_for_every_architecture_resnet18(self):
    self._check_one_trace("resnet18", "transitional")

  def _check_one_trace(self, model, mode):
    t = _topology(model)
    net = _net(t, mode)
    opt = keras.optimizers.SGD(0.01, momentum=0.9)
    opt.build(net.trainable_variables)
    traces = []

    @tf.function
    def train_step(x, y, arch):
      traces.append(1)
      with tf.GradientTape() as tape:
        logits = net(x, arch, training=True)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
      grads = tape.gradient(loss, net.trainable_variables)
      opt.apply_gradients(zip(grads, net.trainable_variables))
      return loss

    rng = np.random.default_rng(0)
    x = tf.random.normal((4,) + t.input_shape)
    y = tf.constant([0, 1, 2, 3])
    seen = set()
    for _ in range(21):
      arch = t.space.sample_uniform(rng)
      seen.add(tuple(arch))
      self.assertTrue(np.isfinite(float(train_step(x, y, tf.constant(arch, tf.int32)))))
    self.assertGreater(len(seen), 15)
    self.assertLen(traces, 1)

  @parameterized.parameters(*SMALL)
  @pytest.mark.slow  # eager supernet forwards at 3 architectures x 2 BN modes x 2 paths
  def test_static_shapes_match_dynamic(self, model):
    # Both BN modes on the same pair of nets (inference first: the training
    # forwards update the moving statistics, identically on both paths).
    t = _topology(model)
    dyn = _net(t, "transitional")
    static = _net(t, "transitional", static_shapes=True)
    static.set_weights(dyn.get_weights())
    x = tf.random.normal((4,) + t.input_shape, seed=3)
    for training in (False, True):
      rng = np.random.default_rng(1)
      for _ in range(3):
        arch = tf.constant(t.space.sample_uniform(rng))
        # Training-mode BN divides by batch std, tiny at 1x1 spatial size in the
        # deepest MobileNet layers: summation-order differences grow there.
        np.testing.assert_allclose(static(x, arch, training=training).numpy(),
                                   dyn(x, arch, training=training).numpy(),
                                   atol=5e-3 if training else 2e-4, err_msg=str(training))

  @parameterized.product(model=list(SMALL), mode=("ordinal", "transitional"))
  @pytest.mark.slow  # eager forwards of the supernet and the child
  def test_dense_child_reproduces_supernet(self, model, mode):
    self._check_dense_child(model, mode)

  @parameterized.parameters("ordinal", "transitional")
  def test_dense_child_reproduces_supernet_resnet8(self, mode):
    self._check_dense_child("resnet8", mode)

  def _check_dense_child(self, model, mode):
    t = _topology(model)
    net = _net(t, mode)
    # A training forward moves the BN statistics, so the copied moving stats
    # are not the initial ones.
    rng = np.random.default_rng(2)
    x = tf.random.normal((8,) + t.input_shape, seed=5)
    arch = t.space.sample_uniform(rng)
    net(x, tf.constant(arch), training=True)
    child = dense.build(t, t.space.widths(arch))
    copied = dense.load_child_weights(child, net.child_weights(arch))
    weighted = [l.name for l in child.layers if l.weights]
    self.assertCountEqual(copied, weighted)
    np.testing.assert_allclose(child(x, training=False).numpy(),
                               net(x, tf.constant(arch), training=False).numpy(), atol=1e-4)

  @parameterized.named_parameters(
      ("resnet20_avgpool_fixed", "resnet20",
       dict(downsample_shortcut="avgpool_conv", fix_last_width=True)),
      ("resnet18_reference_avgpool", "resnet18",
       dict(space="reference", downsample_shortcut="avgpool_conv")),
      ("mobilenet_v2_reference", "mobilenet_v2", dict(space="reference")),
  )
  @pytest.mark.slow  # eager forwards of the supernet and two children
  def test_dense_child_reproduces_supernet_with_options(self, model, options):
    kw = dict(SMALL[model])
    t = topo.build_topology(model, kw.pop("input_shape"), 10, **kw, **options)
    net = _net(t, "transitional")
    x = tf.random.normal((8,) + t.input_shape, seed=6)
    rng = np.random.default_rng(3)
    for _ in range(2):
      arch = t.space.sample_uniform(rng)
      net(x, tf.constant(arch), training=True)
      child = dense.build(t, t.space.widths(arch))
      copied = dense.load_child_weights(child, net.child_weights(arch))
      self.assertCountEqual(copied, [l.name for l in child.layers if l.weights])
      np.testing.assert_allclose(child(x, training=False).numpy(),
                                 net(x, tf.constant(arch), training=False).numpy(), atol=1e-4)

  @pytest.mark.slow  # 150 traced Phi steps (seconds)
  def test_phi_step_anneals_transitional(self):
    t = _topology("resnet8")
    net = _net(t, "transitional")
    ordinal = float(_net(t, "ordinal").phi())
    independent = float(_net(t, "independent").phi())
    self.assertAlmostEqual(float(net.phi()) / ordinal, 1.0, places=2)
    step = tf.function(lambda: net.phi_step(0.02))
    values = [float(step()) for _ in range(150)]
    self.assertLess(values[-1], 0.7 * values[0])
    self.assertGreater(values[-1], independent * 0.999)
    # Columns stay unit norm after every projected step.
    for var, mask in net.projection_variables():
      np.testing.assert_allclose(np.linalg.norm(var.numpy(), axis=1), mask.numpy(), atol=1e-5)

  @pytest.mark.slow  # traces a Phi step, writes and restores a checkpoint (seconds)
  def test_checkpoint_round_trip(self):
    t = _topology("resnet8")
    net = _net(t, "transitional")
    tf.function(lambda: net.phi_step(0.02))()
    path = tf.train.Checkpoint(model=net).save(tempfile.mkdtemp() + "/ckpt")
    other = _net(t, "transitional")
    tf.train.Checkpoint(model=other).restore(path).assert_consumed()
    arch = tf.constant(t.space.largest())
    x = tf.random.normal((2,) + t.input_shape)
    np.testing.assert_allclose(other(x, arch).numpy(), net(x, arch).numpy(), atol=1e-6)
    np.testing.assert_allclose(float(other.phi()), float(net.phi()), rtol=1e-6)

  def test_seed_fixes_every_weight(self):
    t = _topology("resnet8")
    a, b = _net(t, "transitional"), _net(t, "transitional")
    for x, y in zip(a.weights, b.weights):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    c = supernet.Supernet(t, sharing_mode="transitional", noise_std=1e-2, seed=2)
    self.assertFalse(np.array_equal(np.asarray(a.aps_layers[1].kernel),
                                    np.asarray(c.aps_layers[1].kernel)))

  def test_shortcut_is_identity_when_widths_match(self):
    t = _topology("resnet8")
    net = _net(t, "ordinal")
    arch = [1] * t.space.num_decisions  # every width 4: no projection needed
    counts = net.child_weights(arch)
    self.assertFalse(any("shortcut" in n and "stage1" in n for n in counts))
    self.assertTrue(any("stage2_block1_shortcut" == n for n in counts))
    # The supernet's own forward pass agrees: a shortcut conv matters exactly
    # when the child has it (perturbing an unused one changes nothing).
    x = tf.random.stateless_normal((2,) + t.input_shape, [3, 4])
    a = tf.constant(arch, tf.int32)
    base = net(x, a, training=False).numpy()
    checked = 0
    for unit in net.units:
      if "shortcut" not in unit:
        continue
      kernel = unit["shortcut"].conv.kernel
      kernel.assign_add(tf.ones_like(kernel))
      changed = not np.allclose(net(x, a, training=False).numpy(), base, atol=1e-6)
      kernel.assign_sub(tf.ones_like(kernel))
      self.assertEqual(changed, unit["shortcut"].conv.name in counts, unit["shortcut"].conv.name)
      checked += 1
    self.assertGreaterEqual(checked, 2)


def _step_fn(net, opt=None, scale=lambda loss: loss):
  """Loss, logits and gradients of one step (and the update when `opt` is given)."""

  def step(x, y, arch):
    with tf.GradientTape() as tape:
      logits = net(x, arch, training=True)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
      scaled = scale(loss)
    grads = tape.gradient(scaled, net.trainable_variables)
    if opt is not None:
      opt.apply_gradients(zip(grads, net.trainable_variables))
    return loss, logits, grads

  return step


class AcceleratorPathTest(parameterized.TestCase):
  """The static path under XLA, and mixed precision."""

  @pytest.mark.slow
  def test_static_path_under_xla_matches_dynamic_and_compiles_once(self):
    # resnet8: a conditional identity-or-projection shortcut and strided blocks,
    # the parts XLA once folded and recompiled at every step.
    t = topo.build_topology("resnet8", (8, 8, 3), 10, candidates=(2, 4, 8))
    dyn = _net(t, "transitional")
    static = _net(t, "transitional", static_shapes=True)
    static.set_weights(dyn.get_weights())
    traces = []
    xla_step = _step_fn(static)

    def counted(x, y, arch):
      traces.append(1)
      return xla_step(x, y, arch)

    xla = tf.function(counted, jit_compile=True)
    eager = tf.function(_step_fn(dyn))
    x = tf.random.normal((4,) + t.input_shape, seed=7)
    y = tf.constant([0, 1, 2, 3])
    rng = np.random.default_rng(4)
    archs = [t.space.sample_uniform(rng) for _ in range(3)] + [t.space.largest()]
    hlo = set()
    for arch in archs:
      arch = tf.constant(arch, tf.int32)
      (l1, z1, g1), (l2, z2, g2) = xla(x, y, arch), eager(x, y, arch)
      np.testing.assert_allclose(z1.numpy(), z2.numpy(), atol=1e-4)
      self.assertAlmostEqual(float(l1), float(l2), places=4)
      for a, b in zip(g1, g2):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-4)
      # One compilation serves every architecture: neither the architecture
      # nor any weight is a compile-time constant of the XLA program.
      hlo.add(xla.experimental_get_compiler_ir(x, y, arch)(stage="hlo").split("ENTRY", 1)[1])
    self.assertLen(traces, 1)
    self.assertEqual(len(hlo), 1, "the XLA program differs between architectures: "
                     "it would be compiled again for each")

  @parameterized.parameters(False, True)
  @pytest.mark.slow  # 20 eager training forwards
  def test_shortcut_statistics_move_only_when_the_projection_is_taken(self, static_shapes):
    # The static path computes both shortcut branches (no conditional for XLA)
    # and gates the projection's BN update; the dynamic path runs one branch.
    t = topo.build_topology("resnet8", (8, 8, 3), 10, candidates=(2, 4, 8))
    net = _net(t, "transitional", static_shapes=static_shapes)
    x = tf.random.normal((4,) + t.input_shape, seed=9)
    block = next(i for i, (b, u) in enumerate(zip(t.blocks, net.units))
                 if "shortcut" in u and b.conv1.stride == 1)
    b, bn = t.blocks[block], net.units[block]["shortcut"].bn
    rng = np.random.default_rng(0)
    for _ in range(20):
      arch = np.array(t.space.sample_uniform(rng), np.int32)
      widths = t.space.widths(arch)
      before = [v.numpy().copy() for v in (bn.moving_mean, bn.moving_variance)]
      net(x, tf.constant(arch), training=True)
      moved = any(not np.array_equal(a, v.numpy())
                  for a, v in zip(before, (bn.moving_mean, bn.moving_variance)))
      self.assertEqual(moved, widths[b.in_slot] != widths[b.conv2.slot], arch)

  @parameterized.parameters(("mixed_bfloat16", False), ("mixed_bfloat16", True),
                            ("mixed_float16", False))
  @pytest.mark.slow  # traces and runs a training step
  def test_mixed_precision_step(self, policy, static_shapes):
    from aps_tf import precision  # pylint: disable=g-import-not-at-top
    t = topo.build_topology("resnet8", (8, 8, 3), 10, candidates=(2, 4, 8))
    with precision.policy_scope(policy):
      net = _net(t, "transitional", static_shapes=static_shapes)
    self.assertEqual(keras.config.dtype_policy().name, "float32")  # restored
    opt = precision.wrap_optimizer(keras.optimizers.SGD(0.05, momentum=0.9), policy)
    opt.build(net.trainable_variables)
    step = tf.function(_step_fn(net, opt, lambda loss: precision.scale_loss(opt, loss)))
    graph = step.get_concrete_function(
        tf.TensorSpec((4,) + t.input_shape), tf.TensorSpec((4,), tf.int32),
        tf.TensorSpec((t.space.num_decisions,), tf.int32)).graph
    conv_dtypes = {op.get_attr("T") for op in graph.get_operations() if op.type == "Conv2D"}
    self.assertEqual(conv_dtypes, {precision.compute_dtype(policy)})
    x = tf.random.normal((4,) + t.input_shape, seed=8)
    y = tf.constant([0, 1, 2, 3])
    before = [v.numpy() for v in net.trainable_variables]
    rng = np.random.default_rng(5)
    for _ in range(3):
      loss, logits, _ = step(x, y, tf.constant(t.space.sample_uniform(rng), tf.int32))
      self.assertTrue(np.isfinite(float(loss)))
      self.assertEqual(logits.dtype, tf.float32)
    self.assertEqual({v.dtype for v in net.variables}, {"float32"})
    scale = float(precision.loss_scale(opt))
    self.assertEqual(scale > 1.0, policy == "mixed_float16")  # scaling only for float16
    self.assertTrue(any(not np.array_equal(b, v.numpy())
                        for b, v in zip(before, net.trainable_variables)))


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
