"""APS layers: candidate kernels per mode, gradients, BN per candidate, configs."""

from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from aps_tf import layers

IN, OUT = (2, 4, 6), (3, 5, 8)
META_IN, META_OUT = sum(IN), sum(OUT)


def _conv(mode, **kw):
  layer = layers.APSConv2D(3, in_candidates=IN, out_candidates=OUT, meta_in=META_IN,
                           meta_out=META_OUT, sharing_mode=mode, noise_std=1e-2, seed=0, **kw)
  layer.build()
  return layer


class CandidateKernelTest(parameterized.TestCase):

  @parameterized.product(i=[0, 1, 2], o=[0, 1, 2])
  def test_ordinal_equals_slicing(self, i, o):
    layer = _conv("ordinal")
    w = layer.kernel.numpy()
    np.testing.assert_array_equal(layer.candidate_kernel(i, o, use_projection=True).numpy(),
                                  w[:, :, :IN[i], :OUT[o]])

  @parameterized.product(i=[0, 1, 2], o=[0, 1, 2])
  def test_independent_equals_disjoint_slices(self, i, o):
    layer = _conv("independent")
    w = layer.kernel.numpy()
    si, so = sum(IN[:i]), sum(OUT[:o])
    np.testing.assert_array_equal(layer.candidate_kernel(i, o, use_projection=True).numpy(),
                                  w[:, :, si:si + IN[i], so:so + OUT[o]])
    np.testing.assert_array_equal(layer.candidate_kernel(i, o, use_projection=False).numpy(),
                                  w[:, :, si:si + IN[i], so:so + OUT[o]])

  @parameterized.product(i=[0, 2], o=[0, 2])
  def test_transitional_is_the_einsum(self, i, o):
    # (0, 2) projects the input first, (2, 0) the output: both orders are Q^T W P.
    layer = _conv("transitional")
    w, q, p = layer.kernel.numpy(), layer.q.numpy(), layer.p.numpy()
    expected = np.einsum("hwIO,Iy,Ox->hwyx", w, q[i, :, :IN[i]], p[o, :, :OUT[o]])
    np.testing.assert_allclose(layer.candidate_kernel(i, o).numpy(), expected, atol=1e-5)

  @parameterized.product(y=[3, 9], x=[4, 9], static=[False, True],
                         sides=["both", "in", "out"])
  def test_project_kernel_and_its_gradient(self, y, x, static, sides):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 10, 12)).astype(np.float32)
    q = rng.normal(size=(10, y)).astype(np.float32) if sides != "out" else None
    p = rng.normal(size=(12, x)).astype(np.float32) if sides != "in" else None
    g = rng.normal(size=(3, 3, y if q is not None else 10, x if p is not None else 12))
    expected = np.einsum("hwIO,Iy,Ox->hwyx", w, np.eye(10) if q is None else q,
                         np.eye(12) if p is None else p)
    expected_grad = np.einsum("hwyx,Iy,Ox->hwIO", g, np.eye(10) if q is None else q,
                              np.eye(12) if p is None else p)
    shape = lambda a: None if a is None else ([a.shape[0], a.shape[1]] if static  # pylint: disable=g-long-lambda
                                              else [a.shape[0], None])
    specs = [tf.TensorSpec(shape(a), tf.float32) if a is not None else None for a in (q, p)]

    @tf.function(input_signature=[tf.TensorSpec(w.shape, tf.float32)] + [s for s in specs if s])
    def run(w, *proj):
      proj = list(proj)
      qq = proj.pop(0) if q is not None else None
      pp = proj.pop(0) if p is not None else None
      with tf.GradientTape() as tape:
        tape.watch(w)
        k = layers.project_kernel(w, qq, pp)
        loss = tf.reduce_sum(k * tf.constant(g, tf.float32))
      return k, tape.gradient(loss, w)

    k, grad = run(w, *[a for a in (q, p) if a is not None])
    np.testing.assert_allclose(k.numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grad.numpy(), expected_grad, rtol=1e-4, atol=1e-4)

  @parameterized.parameters("ordinal", "independent")
  def test_depthwise_and_dense_slices(self, mode):
    dw = layers.APSDepthwiseConv2D(3, candidates=OUT, meta=META_OUT, sharing_mode=mode)
    dw.build()
    dense = layers.APSDense(7, in_candidates=IN, meta_in=META_IN, sharing_mode=mode)
    dense.build()
    for a in range(3):
      s_out = sum(OUT[:a]) if mode == "independent" else 0
      s_in = sum(IN[:a]) if mode == "independent" else 0
      np.testing.assert_array_equal(dw.candidate_kernel(a, use_projection=True).numpy(),
                                    dw.kernel.numpy()[:, :, s_out:s_out + OUT[a]])
      np.testing.assert_array_equal(dense.candidate_kernel(a, use_projection=True).numpy(),
                                    dense.kernel.numpy()[s_in:s_in + IN[a]])


class BatchMomentsTest(parameterized.TestCase):

  @parameterized.parameters(False, True)
  def test_equals_tf_nn_moments_with_its_gradient(self, dynamic_channels):
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(4, 5, 6, 7)).astype(np.float32)
    shape = [4, 5, 6, None] if dynamic_channels else list(x.shape)

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
    def both(x):
      with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        mine = layers.batch_moments(x)
        ref = tf.nn.moments(x, axes=[0, 1, 2])
        weights = tf.range(1.0, 1.0 + tf.cast(tf.shape(x)[-1], tf.float32))
        l_mine = tf.reduce_sum(mine[0] * weights + mine[1] * weights ** 2)
        l_ref = tf.reduce_sum(ref[0] * weights + ref[1] * weights ** 2)
      return mine, ref, tape.gradient(l_mine, x), tape.gradient(l_ref, x)

    mine, ref, g_mine, g_ref = both(x)
    for a, b in zip(mine, ref):
      np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)
    np.testing.assert_allclose(g_mine.numpy(), g_ref.numpy(), rtol=1e-4, atol=1e-6)


class GradientTest(parameterized.TestCase):

  @parameterized.parameters("ordinal", "independent", "transitional")
  def test_task_loss_sends_no_gradient_to_projections(self, mode):
    layer = _conv(mode)
    x = tf.random.normal([2, 5, 5, IN[1]])
    with tf.GradientTape(persistent=True) as tape:
      tape.watch([layer.q.value, layer.p.value])
      loss = tf.reduce_sum(tf.square(layer(x, tf.constant(1), tf.constant(2))))
    self.assertIsNone(tape.gradient(loss, layer.q.value))
    self.assertIsNone(tape.gradient(loss, layer.p.value))
    g = tape.gradient(loss, layer.kernel.value)
    self.assertGreater(float(tf.reduce_sum(tf.abs(g))), 0.0)
    # Ordinal/independent layers slice (P/Q are not in the graph at all), so the
    # claim is tested where P and Q are multiplied in: the einsum path.
    with tf.GradientTape(persistent=True) as tape:
      tape.watch([layer.q.value, layer.p.value])
      kernel = layer.candidate_kernel(1, 2, use_projection=True)
      loss = tf.reduce_sum(tf.square(tf.nn.conv2d(x, kernel, 1, "SAME")))
    for proj in (layer.q.value, layer.p.value):
      grad = tape.gradient(loss, proj)
      self.assertTrue(grad is None or not np.any(grad.numpy()), mode)
    self.assertGreater(float(tf.reduce_sum(tf.abs(tape.gradient(loss, layer.kernel.value)))),
                       0.0)
    # Without the stop-gradient, the same loss would reach P (the test can fail).
    with tf.GradientTape() as tape:
      tape.watch(layer.p.value)
      w = tf.einsum("hwIO,Ox->hwIx", tf.convert_to_tensor(layer.kernel),
                    layer.p.value[2, :, :OUT[2]])
      leak = tf.reduce_sum(tf.square(w))
    self.assertGreater(float(tf.reduce_sum(tf.abs(tape.gradient(leak, layer.p.value)))), 0.0)
    trainable = [w.path for w in layer.trainable_weights]
    self.assertNotIn(layer.p.path, trainable)
    self.assertNotIn(layer.q.path, trainable)
    self.assertIn(layer.kernel.path, trainable)


class BatchNormTest(parameterized.TestCase):

  def test_training_updates_only_the_sampled_row(self):
    bn = layers.PerCandidateBatchNorm(candidates=(2, 4), momentum=0.5)
    bn.build()
    x = tf.random.normal([8, 3, 3, 2]) + 5.0
    bn(x, tf.constant(0), training=True)
    mean = bn.moving_mean.numpy()
    self.assertGreater(mean[0, 0], 2.0)
    np.testing.assert_array_equal(mean[0, 2:], 0.0)  # padded columns untouched
    np.testing.assert_array_equal(mean[1], 0.0)        # other candidate untouched

  def test_statistics_per_input_and_output_candidate(self):
    bn = layers.PerCandidateBatchNorm(candidates=(2, 4), in_groups=3, momentum=0.5)
    bn.build()
    self.assertEqual(tuple(bn.moving_mean.shape), (6, 4))
    self.assertEqual(tuple(bn.gamma.shape), (2, 4))
    bn(tf.random.normal([8, 3, 3, 4]) + 5.0, tf.constant(1), training=True,
       in_index=tf.constant(2))
    mean = bn.moving_mean.numpy()
    row = bn.stat_row(1, 2)
    self.assertEqual(row, 5)
    self.assertGreater(mean[row].min(), 2.0)
    np.testing.assert_array_equal(np.delete(mean, row, axis=0), 0.0)
    # Inference reads the same row: the batch mean is removed.
    x = tf.fill([2, 3, 3, 4], float(mean[row, 0]))
    y = bn(x, tf.constant(1), training=False, in_index=tf.constant(2)).numpy()
    self.assertAlmostEqual(float(y[0, 0, 0, 0]), 0.0, places=4)

  def test_static_masks_padding(self):
    bn = layers.PerCandidateBatchNorm(candidates=(2, 4), static_shapes=True)
    bn.build()
    bn.beta.assign(tf.ones_like(bn.beta))
    x = tf.concat([tf.random.normal([4, 3, 3, 2]), tf.zeros([4, 3, 3, 2])], -1)
    y = bn(x, tf.constant(0), training=True).numpy()
    np.testing.assert_array_equal(y[..., 2:], 0.0)


class ConfigTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("conv", lambda: layers.APSConv2D(3, 2, in_candidates=IN, out_candidates=OUT,
                                        meta_in=META_IN, meta_out=META_OUT,
                                        sharing_mode="transitional", noise_std=1e-3, seed=4)),
      ("conv_fixed_input", lambda: layers.APSConv2D(3, in_candidates=None, out_candidates=OUT,
                                                    meta_in=3, meta_out=META_OUT)),
      ("depthwise", lambda: layers.APSDepthwiseConv2D(3, candidates=OUT, meta=META_OUT,
                                                      static_shapes=True)),
      ("dense", lambda: layers.APSDense(10, in_candidates=IN, meta_in=META_IN,
                                        sharing_mode="independent")),
      ("bn", lambda: layers.PerCandidateBatchNorm(candidates=OUT, in_groups=3, momentum=0.8)),
  )
  def test_get_config_round_trip(self, make):
    layer = make()
    clone = type(layer).from_config(layer.get_config())
    self.assertEqual(clone.get_config(), layer.get_config())
    layer.build()
    clone.build()
    self.assertEqual([w.shape for w in clone.weights], [w.shape for w in layer.weights])
    # Same seed, same projections: the config fully determines P/Q.
    for a, b in zip(layer.non_trainable_weights, clone.non_trainable_weights):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

  def test_serialize_with_keras(self):
    layer = _conv("ordinal")
    restored = keras.layers.deserialize(
        keras.layers.serialize(layer), custom_objects={"APSConv2D": layers.APSConv2D})
    self.assertIsInstance(restored, layers.APSConv2D)
    self.assertEqual(restored.get_config()["out_candidates"], OUT)


if __name__ == "__main__":
  from absl.testing import absltest
  absltest.main()
