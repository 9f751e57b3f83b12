"""The Keras importer: a user's model as a layer graph, its supernet and its child.

Per model (keras.applications and two user-written CNNs): the widest FLOPs and
parameters equal the independent count on the user's model; the widest
supernet, loaded with the user's weights, computes the user's logits; the
widest child keeps the user's layers (names and configs) and, with the
supernet's weights, the user's outputs; a narrower child builds with the
chosen widths and matches the supernet there; one trace serves several
architectures. The user's BN statistics and biases are randomised first, so
that copying them is tested. Each model is built once per class; ResNet50 and
EfficientNetB0, and the training-mode trace of the MobileNets, are in the slow
tier (`@pytest.mark.slow`).
"""

import io
import json
import os
import tempfile
from unittest import mock

from absl.testing import absltest
import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from aps_tf import archfile
from aps_tf import cli
from aps_tf import errors
from aps_tf import flops
from aps_tf import models
from aps_tf.models import dense
from aps_tf.models import graph as graph_lib
from aps_tf.models import graph_dense
from aps_tf.models import graph_supernet
from configs import keras_model
from aps_tf.models import keras_import

TOL = 1e-5


def sequential_cnn():
  return keras.Sequential([
      keras.Input((20, 20, 1)),
      keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
      keras.layers.MaxPooling2D(name="pool1"),
      keras.layers.Conv2D(12, 3, padding="same", use_bias=False,
                          kernel_regularizer=keras.regularizers.L2(1e-4), name="conv2"),
      keras.layers.BatchNormalization(name="bn2"),
      keras.layers.ReLU(name="relu2"),
      keras.layers.Flatten(name="flatten"),
      keras.layers.Dropout(0.2, name="drop"),
      keras.layers.Dense(16, activation="relu", name="fc1"),
      keras.layers.Dense(10, activation="softmax", name="out"),
  ], name="user_sequential")


def functional_cnn():
  """Concatenate feeding a conv (block-diagonal input projection) and a residual Add."""
  i = keras.Input((24, 24, 3), name="image")
  x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="stem")(i)
  x = keras.layers.BatchNormalization(name="stem_bn")(x)
  x = keras.layers.Activation("swish", name="stem_act")(x)
  a = keras.layers.Conv2D(6, 1, name="branch_a")(x)
  b = keras.layers.DepthwiseConv2D(3, padding="same", name="branch_b_dw")(x)
  b = keras.layers.Conv2D(10, 1, use_bias=False, name="branch_b")(b)
  c = keras.layers.Concatenate(name="cat")([a, b])
  c = keras.layers.BatchNormalization(name="cat_bn")(c)
  y = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="mix")(c)
  y = keras.layers.BatchNormalization(name="mix_bn")(y)
  x = keras.layers.Add(name="residual")([x, y])
  x = keras.layers.ReLU(6.0, name="out_act")(x)
  x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
  x = keras.layers.Dense(7, name="logits")(x)
  return keras.Model(i, x, name="user_functional")


def randomize(model, seed=0):
  """Random BN statistics/affines and biases, so that copying them is tested."""
  rng = np.random.default_rng(seed)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      ws = []
      for v in layer.weights:
        positive = "gamma" in v.name or "variance" in v.name
        ws.append(rng.uniform(0.5, 1.5, v.shape) if positive else rng.normal(0, 0.1, v.shape))
      layer.set_weights(ws)
    elif getattr(layer, "bias", None) is not None and hasattr(layer, "kernel"):
      layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape))


def user_logits(model, g, x):
  """The user's model's output before its final softmax (the model's own layers)."""
  if g.softmax is None:
    return model(x, training=False).numpy()
  layer = model.get_layer(g.softmax)
  if hasattr(layer, "kernel"):  # a Dense/Conv with activation='softmax'
    old, layer.activation = layer.activation, keras.activations.linear
    try:
      return model(x, training=False).numpy()
    finally:
      layer.activation = old
  return keras.Model(model.inputs[0], layer.input)(x, training=False).numpy()


def assert_close(test, got, want, tol=TOL):
  """Equal to `tol` relative to the output's scale (absolute for |want| <= 1)."""
  scale = max(1.0, float(np.abs(want).max()))
  np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale)


class _ImportTest:
  """Mixin: one model per class (MODEL), imported and loaded into a supernet once."""
  MODEL = None
  PIXELS = 1.0  # input range

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    keras.utils.set_random_seed(0)
    cls.model = cls.MODEL()
    randomize(cls.model)
    cls.topology = models.from_keras(cls.model)
    cls.graph = cls.topology.graph
    cls.net = models.build_supernet(cls.topology, seed=0)
    cls.copied = graph_supernet.copy_keras_weights(cls.net, cls.model)
    rng = np.random.default_rng(1)
    cls.x = rng.uniform(0, cls.PIXELS, (2,) + cls.topology.input_shape).astype(np.float32)
    cls.space = cls.topology.space
    cls.widest = cls.space.largest()

  def test_widest_flops_and_params_equal_the_independent_count(self):
    widths = self.space.widths(self.widest)
    self.assertEqual(list(widths), list(self.graph.slot_widths))
    for convention in flops.CONVENTIONS:
      self.assertEqual(flops.count(self.topology, widths, convention),
                       flops.count_keras_model(self.model, convention), convention)
    self.assertEqual(flops.count(self.topology, widths)["params"], self.model.count_params()
                     - sum(int(np.prod(v.shape)) for v in self.model.non_trainable_weights))

  def test_widest_supernet_computes_the_users_model(self):
    got = self.net(self.x, tf.constant(self.widest, tf.int32), training=False).numpy()
    assert_close(self, got, user_logits(self.model, self.graph, self.x))

  def test_widest_child_is_the_users_model(self):
    child = graph_dense.build(self.topology, self.space.widths(self.widest), logits=False)
    user_layers = [l for l in self.model.layers if not isinstance(l, keras.layers.InputLayer)]
    child_layers = [l for l in child.layers if not isinstance(l, keras.layers.InputLayer)]
    self.assertEqual([l.name for l in child_layers], [l.name for l in user_layers])
    for layer in user_layers:  # only the widths may change; at the widest nothing does
      self.assertEqual(json.dumps(child.get_layer(layer.name).get_config(), default=str),
                       json.dumps(layer.get_config(), default=str), layer.name)
    done = dense.load_child_weights(child, self.net.child_weights(self.widest))
    self.assertEqual(sorted(done), sorted(l.name for l in user_layers if l.weights))
    assert_close(self, child(self.x, training=False).numpy(),
                 self.model(self.x, training=False).numpy())

  def test_narrower_child_builds_with_the_chosen_widths_and_matches_the_supernet(self):
    arch = self.space.smallest()
    arch[0] = len(self.space.decisions[0].candidates) - 1  # not uniform
    widths = self.space.widths(arch)
    self.assertLess(sum(widths), sum(self.graph.slot_widths))
    child = graph_dense.build(self.topology, widths)
    for node in self.graph.nodes:
      if node.op in ("conv", "dense"):
        self.assertEqual(child.get_layer(node.name).kernel.shape[-1],
                         self.graph.width(node, widths), node.name)
    self.assertEqual(flops.count(self.topology, widths), flops.count_keras_model(child))
    dense.load_child_weights(child, self.net.child_weights(arch))
    got = child(self.x, training=False).numpy()
    self.assertEqual(got.shape, (2, self.topology.num_classes))
    want = self.net(self.x, tf.constant(arch, tf.int32), training=False).numpy()
    assert_close(self, got, want)

  def test_one_trace_serves_several_architectures(self):
    saved = [np.array(v) for v in self.net.weights]
    step = tf.function(lambda x, a: self.net(x, a, training=True))
    rng = np.random.default_rng(2)
    archs = [self.space.smallest(), self.widest, self.space.sample_uniform(rng)]
    outs = [step(self.x, tf.constant(a, tf.int32)).numpy() for a in archs]
    for v, value in zip(self.net.weights, saved):
      v.assign(value)
    self.assertEqual(step.experimental_get_tracing_count(), 1)
    self.assertTrue(all(np.isfinite(o).all() for o in outs))
    self.assertFalse(np.allclose(outs[0], outs[1]))


class SequentialCNNTest(_ImportTest, absltest.TestCase):
  MODEL = staticmethod(sequential_cnn)

  def test_flatten_of_a_map_repeats_the_channels_in_the_dense_input(self):
    fc1 = self.graph.node("fc1")
    self.assertEqual(self.graph.node(fc1.inputs[0]).spatial, 9 * 9)
    # conv2 is searched although a Dense reads its flattened map.
    self.assertIsNotNone(self.space.slot_decision(self.graph.slot_names.index("conv2")))


  def test_transitional_projections_start_from_the_users_weights(self):
    net = models.build_supernet(self.topology, sharing_mode="transitional", seed=0)
    graph_supernet.copy_keras_weights(net, self.model)
    got = net(self.x, tf.constant(self.widest, tf.int32), training=False).numpy()
    assert_close(self, got, user_logits(self.model, self.graph, self.x))
    self.assertGreater(len(net.projection_variables()), 0)
    self.assertTrue(np.isfinite(float(net.phi())))


class FunctionalCNNTest(_ImportTest, absltest.TestCase):
  MODEL = staticmethod(functional_cnn)

  def test_ties_and_fixed_slots(self):
    g, sp = self.graph, self.space
    slot = g.slot_names.index
    # The residual Add ties the stem and 'mix'; the depthwise keeps the stem's slot.
    self.assertEqual(sp.slot_decision(slot("stem")), sp.slot_decision(slot("mix")))
    self.assertEqual(g.node("branch_b_dw").parts, g.node("stem").parts)
    # Concatenate: the parts of both branches, each its own decision.
    self.assertEqual(g.node("cat").parts, (slot("branch_a"), slot("branch_b")))
    self.assertNotEqual(sp.slot_decision(slot("branch_a")), sp.slot_decision(slot("branch_b")))
    # Input and classifier fixed.
    self.assertIsNone(sp.slot_decision(slot("image")))
    self.assertIsNone(sp.slot_decision(slot("logits")))
    self.assertEqual(sp.num_decisions, 3)
    self.assertEqual(sp.decisions[0].candidates, (4, 8, 12, 16))

  def test_supernet_from_config_starts_from_the_users_weights(self):
    # The search's constructor: a graph supernet, the user's weights copied in
    # (model.init_from='keras'), so the widest architecture gives the user's logits.
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, "user.keras")
      self.model.save(path)
      cfg = keras_model.get_config()
      cfg.model.keras_file = path
      net = models.supernet_from_config(cfg, self.topology)
      self.assertIsInstance(net, graph_supernet.GraphSupernet)
      got = net(self.x, tf.constant(self.widest, tf.int32), training=False).numpy()
      assert_close(self, got, user_logits(self.model, self.graph, self.x))
      cfg.model.init_from = None
      fresh = models.supernet_from_config(cfg, self.topology)
      got = fresh(self.x, tf.constant(self.widest, tf.int32), training=False).numpy()
      self.assertFalse(np.allclose(got, user_logits(self.model, self.graph, self.x), atol=1e-3))
      cfg.search.static_shapes = True
      with self.assertRaisesRegex(errors.ConfigError, "static_shapes"):
        models.supernet_from_config(cfg, self.topology)

  def test_searched_units_project_like_the_candidate_kernel(self):
    # The gradient probes' seam: projecting the meta-weight itself gives the
    # candidate kernel (the map is linear); concatenation-fed layers are left out.
    units = self.net.searched_units()
    self.assertTrue(units)
    arch = self.space.sample_uniform(np.random.default_rng(3))
    idx = self.net.slot_indices(np.array(arch, np.int32)).numpy()
    for layer, i, o in units:
      self.assertLen(layer.in_slots, 1)
      got = layer.project_gradient(layer.kernel.numpy(), None if i is None else idx[i],
                                   None if o is None else idx[o])
      np.testing.assert_allclose(got, layer.candidate_kernel(tf.constant(idx)).numpy())
    self.assertNotIn("mix", [layer.name for layer, _, _ in units])  # fed by the Concatenate

  def test_pinned_layer_and_fractions(self):
    t = models.from_keras(self.model, pinned=("branch_a",), width_fractions=(0.5, 1.0),
                          meta_width=1.5)
    self.assertIsNone(t.space.slot_decision(t.graph.slot_names.index("branch_a")))
    self.assertEqual([d.candidates for d in t.space.decisions], [(8, 16), (5, 10)])
    self.assertEqual([d.meta_width for d in t.space.decisions], [24, 15])
    with self.assertRaisesRegex(errors.ConfigError, "nope"):
      models.from_keras(self.model, pinned=("nope",))

  def test_l1_channel_order_keeps_the_widest_exact_and_narrows_to_the_strongest(self):
    net = models.build_supernet(self.topology, seed=0)
    graph_supernet.copy_keras_weights(net, self.model, importance="l1")
    got = net(self.x, tf.constant(self.widest, tf.int32), training=False).numpy()
    assert_close(self, got, user_logits(self.model, self.graph, self.x))
    arch = self.space.smallest()
    kernel = net.child_weights(arch)["branch_a"][0]  # 1x1 conv, input = stem (tied group)
    user = np.asarray(self.model.get_layer("branch_a").kernel)
    strongest = np.argsort(-np.abs(user).reshape(-1, user.shape[-1]).sum(0), kind="stable")
    stem_order = graph_supernet.channel_orders(net, self.model, "l1")[
        self.graph.slot_names.index("stem")]
    np.testing.assert_allclose(
        kernel, user[:, :, stem_order[:kernel.shape[2]]][..., strongest[:kernel.shape[3]]])

  def test_independent_sharing_starts_from_the_users_weights(self):
    with self.assertRaisesRegex(errors.ConfigError, "meta_width='sum'"):
      models.build_supernet(self.topology, sharing_mode="independent")
    t = models.from_keras(self.model, meta_width="sum")
    net = models.build_supernet(t, sharing_mode="independent", seed=0)
    graph_supernet.copy_keras_weights(net, self.model)
    got = net(self.x, tf.constant(t.space.largest(), tf.int32), training=False).numpy()
    assert_close(self, got, user_logits(self.model, self.graph, self.x))

  def test_transitional_sharing_needs_one_input_part(self):
    with self.assertRaisesRegex(errors.ConfigError, "concatenation"):
      models.build_supernet(self.topology, sharing_mode="transitional")

  def test_graph_round_trips_through_json_and_the_architecture_file(self):
    text = json.dumps(self.graph.to_json())
    self.assertEqual(json.dumps(graph_lib.Graph.from_json(json.loads(text)).to_json()), text)
    arch_idx = self.space.smallest()
    widths = self.space.widths(arch_idx)
    arch = archfile.make(self.topology, widths, decisions=arch_idx)
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, "arch.json")
      archfile.save(arch, path)
      loaded = archfile.load(path)
    self.assertEqual(loaded["flops"]["full"], flops.count(self.topology, widths)["flops"])
    child = dense.build_from_arch(loaded)
    self.assertEqual([l.name for l in child.layers],
                     [l.name for l in graph_dense.build(self.topology, widths).layers])
    self.assertEqual(flops.count_keras_model(child)["flops"], loaded["flops"]["full"])
    bad = dict(loaded, graph=dict(loaded["graph"], format="other"))
    with self.assertRaisesRegex(archfile.ArchFileError, "field 'graph'"):
      archfile.validate(bad, "arch.json")

  def test_keras_file_and_config(self):
    with tempfile.TemporaryDirectory() as d:
      path = os.path.join(d, "user.keras")
      self.model.save(path)
      cfg = ml_collections.ConfigDict({"keras_file": path, "width_fractions": [0.5, 1.0],
                                       "pinned": [], "meta_width": None, "name": "x",
                                       "candidates": (), "stage_factors": None})
      t = models.topology_from_config(cfg, (24, 24, 3), 7)
      self.assertEqual(json.dumps(t.graph.to_json()), json.dumps(self.graph.to_json()))
      with self.assertRaisesRegex(errors.ConfigError, "10 classes"):
        models.topology_from_config(cfg, (24, 24, 3), 10)
      net = models.build_supernet(t, seed=0)
      cfg.init_from, cfg.channel_order = "keras", "l1"
      self.assertEqual(len(graph_supernet.init_from_config(net, cfg)), len(self.copied))
      got = net(self.x, tf.constant(t.space.largest(), tf.int32), training=False).numpy()
      assert_close(self, got, user_logits(self.model, self.graph, self.x))
      cfg.init_from = "imagenet"
      with self.assertRaisesRegex(errors.ConfigError, "init_from"):
        graph_supernet.init_from_config(net, cfg)
      cfg.keras_file = os.path.join(d, "missing.keras")
      with self.assertRaisesRegex(errors.ConfigError, "missing.keras"):
        models.topology_from_config(cfg, (24, 24, 3), 7)


class MobileNetV2Test(_ImportTest, absltest.TestCase):
  MODEL = staticmethod(lambda: keras.applications.MobileNetV2(
      alpha=0.35, input_shape=(96, 96, 3), weights=None, classes=10))

  # A training-mode trace; inverted residuals' one trace runs in the suite on
  # MobileNetV3Small.
  @pytest.mark.sweep
  def test_one_trace_serves_several_architectures(self):
    super().test_one_trace_serves_several_architectures()


class MobileNetV3SmallTest(_ImportTest, absltest.TestCase):
  MODEL = staticmethod(lambda: keras.applications.MobileNetV3Small(
      input_shape=(96, 96, 3), weights=None, classes=10))
  PIXELS = 255.0

  @pytest.mark.slow
  def test_one_trace_serves_several_architectures(self):  # a training-mode trace: slow
    super().test_one_trace_serves_several_architectures()

  def test_squeeze_excite_and_scalar_operations(self):
    ops = {n.op for n in self.graph.nodes}
    self.assertIn("scalar", ops)  # hard-sigmoid's x + 3.0 and * (1 / 6)
    # Squeeze-excite: the Multiply ties the expanded width to the SE's second conv.
    mul = [n for n in self.graph.nodes if n.op == "multiply"][0]
    a, b = (self.graph.node(i) for i in mul.inputs)
    self.assertEqual([self.graph.groups[p] for p in a.parts],
                     [self.graph.groups[p] for p in b.parts])


@pytest.mark.slow
class ResNet50Test(_ImportTest, absltest.TestCase):
  MODEL = staticmethod(lambda: keras.applications.ResNet50(
      input_shape=(64, 64, 3), weights=None, classes=10))

  # Residual adds' one trace runs in the suite on MobileNetV3Small.
  @pytest.mark.sweep
  def test_one_trace_serves_several_architectures(self):
    super().test_one_trace_serves_several_architectures()


@pytest.mark.slow
class EfficientNetB0Test(_ImportTest, absltest.TestCase):
  MODEL = staticmethod(lambda: keras.applications.EfficientNetB0(
      input_shape=(64, 64, 3), weights=None, classes=10))
  PIXELS = 255.0

  # Squeeze-excite blocks' one trace runs in the suite on MobileNetV3Small.
  @pytest.mark.sweep
  def test_one_trace_serves_several_architectures(self):
    super().test_one_trace_serves_several_architectures()


class _Custom(keras.layers.Layer):

  def call(self, x):
    return x * 2.0


class _Subclassed(keras.Model):

  def __init__(self):
    super().__init__()
    self.conv = keras.layers.Conv2D(4, 3)

  def call(self, x):
    return self.conv(x)


class UnsupportedModelTest(absltest.TestCase):

  def _model(self, layer):
    i = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(4, 3, name="c")(i)
    x = layer(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(i, keras.layers.Dense(3)(x))

  def assert_refused(self, model, *needles):
    with self.assertRaises(keras_import.UnsupportedModelError) as cm:
      models.from_keras(model)
    message = str(cm.exception)
    self.assertIsInstance(cm.exception, errors.UserError)
    self.assertNotIn("\n", message)
    for needle in needles:
      self.assertIn(needle, message)
    return message

  def test_custom_layer(self):
    self.assert_refused(self._model(_Custom(name="mine")), "'mine'", "_Custom",
                        "custom layers", "supported: ", "Conv2D")

  def test_lambda(self):
    self.assert_refused(self._model(keras.layers.Lambda(lambda t: t + 1, name="lam")),
                        "'lam'", "Lambda")

  def test_grouped_conv(self):
    self.assert_refused(self._model(keras.layers.Conv2D(4, 1, groups=2, name="g")),
                        "'g'", "groups=2", "DepthwiseConv2D")

  def test_recurrent_and_attention(self):
    i = keras.Input((5, 6))
    x = keras.layers.LSTM(4, name="rnn")(i)
    self.assert_refused(keras.Model(i, keras.layers.Dense(2)(x)), "'rnn'", "LSTM")
    i = keras.Input((8, 8, 4))
    x = keras.layers.MultiHeadAttention(2, 4, name="att")(i, i)
    self.assert_refused(keras.Model(i, x), "'att'", "MultiHeadAttention")

  def test_subclassed_model(self):
    m = _Subclassed()
    m(np.zeros((1, 8, 8, 3), np.float32))
    self.assert_refused(m, "not a built Sequential or functional model")

  def test_binary_contract_is_one_line_and_exit_2(self):
    try:
      models.from_keras(self._model(_Custom(name="mine")))
    except errors.UserError as e:
      err = e
    stderr = io.StringIO()
    with mock.patch("sys.stderr", stderr), self.assertRaises(SystemExit) as cm:
      cli.user_error_exit(err)
    self.assertEqual(cm.exception.code, 2)
    self.assertEqual(stderr.getvalue().count("\n"), 1)
    self.assertIn("mine", stderr.getvalue())


if __name__ == "__main__":
  absltest.main()
