"""Tests of the Python API (aps_tf.search/export, budgets) and of the config a
user's .keras file resolves to (aps_tf.user_model); the end-to-end runs are
in tests/test_own_model.py."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

import aps_tf
from aps_tf import api
from aps_tf import errors
from aps_tf import flops as flops_lib
from aps_tf import user_model
from aps_tf.search import settings
from configs import keras_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def functional_cnn(size=16, channels=1, classes=10, rescale=False, name="tiny"):
  """A residual Add and a Concatenate: the ties the importer must find."""
  x = inp = keras.Input((size, size, channels), name="image")
  if rescale:
    x = keras.layers.Rescaling(1 / 255, name="rescale")(x)
  x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(x)
  x = keras.layers.BatchNormalization(name="bn1")(x)
  y = keras.layers.Conv2D(16, 3, padding="same", name="c2")(x)
  x = keras.layers.Add(name="add")([x, y])
  x = keras.layers.MaxPooling2D(name="pool")(x)
  a = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c3a")(x)
  b = keras.layers.Conv2D(8, 1, activation="relu", name="c3b")(x)
  x = keras.layers.Concatenate(name="cat")([a, b])
  x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
  return keras.Model(inp, keras.layers.Dense(classes, name="logits")(x), name=name)


def digits_dataset(n=60, size=8):
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (n, size, size, 1)).astype(np.uint8)
  return tf.data.Dataset.from_tensor_slices((x, np.arange(n) % 10))


_PRETRAINED = {}


def pretrained_cnn_file():
  """(model, path): aps_tf.experiments.compress's CNN saved once per process
  (read-only; InitFromKerasTest and ChildModelTest both start from it)."""
  if not _PRETRAINED:
    from aps_tf.experiments import compress  # pylint: disable=g-import-not-at-top
    tmp = tempfile.mkdtemp()
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    model = compress.pretrained_cnn()
    path = os.path.join(tmp, "cnn.keras")
    model.save(path)
    _PRETRAINED.update(model=model, path=path)
  return _PRETRAINED["model"], _PRETRAINED["path"]


class _Subclassed(keras.Model):

  def __init__(self):
    super().__init__()
    self.dense = keras.layers.Dense(10)

  def call(self, x):
    return self.dense(keras.ops.mean(x, axis=(1, 2)))


@pytest.mark.slow
class ImportTest(absltest.TestCase):

  def test_import_is_lazy_and_search_is_callable(self):
    code = ("import sys, aps_tf; assert 'tensorflow' not in sys.modules, 'eager TF'; "
            "assert callable(aps_tf.search); from aps_tf.search import run; "
            "import aps_tf.search; assert callable(aps_tf.search); "
            "print(aps_tf.Flops(0.5).value, callable(aps_tf.export))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    self.assertEqual(r.stdout.split(), ["0.5", "True"])


class BudgetTest(parameterized.TestCase):

  def test_fraction_and_absolute(self):
    self.assertEqual(aps_tf.Flops(0.5).overrides()["search.reward.target_fraction"], 0.5)
    absolute = aps_tf.Params(3e4).overrides()
    self.assertEqual((absolute["search.reward.kind"], absolute["search.reward.target"],
                      absolute["search.reward.target_fraction"]), ("params", 3e4, None))

  @parameterized.parameters(0, -1, "half", True)
  def test_bad_values(self, value):
    with self.assertRaisesRegex(errors.UserError, "Flops: expected a positive number"):
      aps_tf.Flops(value)

  def test_latency(self):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
      self.assertEqual(aps_tf.Latency(f.name, ms=2.0).overrides()["search.reward.target"], 2.0)
      with self.assertRaisesRegex(errors.UserError, "exactly one of ms= and fraction="):
        aps_tf.Latency(f.name)
      with self.assertRaisesRegex(errors.UserError, "0 < fraction <= 1"):
        aps_tf.Latency(f.name, fraction=2.0)
    with self.assertRaisesRegex(errors.UserError, "no such file"):
      aps_tf.Latency("/no/table.json", ms=1.0)


class ResolveTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.enter_context(tempfile.TemporaryDirectory())

  def cfg(self, model, **data):
    path = os.path.join(self.dir, f"{model.name}.keras")
    model.save(path)
    cfg = keras_model.get_config()
    cfg.model.keras_file = path
    cfg.data.update(data)
    return cfg

  @parameterized.named_parameters(("own_rescaling", True, "none"),
                                  ("no_rescaling", False, "mean_std"))
  def test_fields_from_the_model(self, rescale, normalization):
    model = functional_cnn(size=12, rescale=rescale)
    cfg = settings.resolve_config(user_model.resolve_config(self.cfg(model)))
    self.assertEqual((cfg.data.image_size, cfg.data.channels, cfg.data.num_classes),
                     (12, 1, 10))
    self.assertEqual(cfg.data.normalization, normalization)
    # Half the user's model's FLOPs, counted independently on the Keras model.
    full = flops_lib.count_keras_model(model)["flops"]
    self.assertAlmostEqual(cfg.search.reward.target, 0.5 * full, delta=1e-6 * full)

  def test_more_classes_in_the_data_than_the_model(self):
    model = functional_cnn(classes=3)
    with self.assertRaisesRegex(user_model.UserModelError, "10 classes.*3 outputs"):
      user_model.resolve_config(self.cfg(model))

  def test_keras_config_without_a_file(self):
    with self.assertRaisesRegex(user_model.UserModelError, "model.keras_file=PATH"):
      user_model.resolve_config(keras_model.get_config())

  def test_missing_and_wrong_files(self):
    cfg = keras_model.get_config()
    cfg.model.keras_file = "/no/model.keras"
    with self.assertRaisesRegex(user_model.UserModelError, "/no/model.keras: no such file"):
      user_model.resolve_config(cfg)
    cfg.model.keras_file = "/no/model.h5"
    with self.assertRaisesRegex(user_model.UserModelError, "'.keras' file"):
      user_model.resolve_config(cfg)

  def test_non_square_input(self):
    x = inp = keras.Input((8, 12, 1))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x))
    model = keras.Model(inp, keras.layers.Dense(10)(x), name="wide")
    with self.assertRaisesRegex(user_model.UserModelError, "square"):
      user_model.resolve_config(self.cfg(model))


class ApiInputTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.enter_context(tempfile.TemporaryDirectory())

  def test_bad_model(self):
    with self.assertRaisesRegex(errors.UserError, "expected a keras.Model or a path"):
      aps_tf.search(np.zeros(3), digits_dataset(), workdir=self.dir)
    with self.assertRaisesRegex(errors.UserError, "not built"):
      aps_tf.search(keras.Sequential([keras.layers.Dense(3)]), digits_dataset(),
                    workdir=self.dir)
    model = _Subclassed()
    model(np.zeros((1, 8, 8, 1), np.float32))
    with self.assertRaisesRegex(errors.UserError, "subclassed"):
      aps_tf.search(model, digits_dataset(), workdir=self.dir)

  def test_bad_data_and_budget(self):
    model = functional_cnn(size=8)
    with self.assertRaisesRegex(errors.UserError, "data: expected a tf.data.Dataset"):
      aps_tf.search(model, np.zeros((4, 8, 8, 1)), workdir=self.dir)
    with self.assertRaisesRegex(errors.UserError, "not a directory, and data.source"):
      aps_tf.search(model, "/no/such/images", workdir=self.dir)
    with self.assertRaisesRegex(errors.UserError, "budget: expected aps_tf.Flops"):
      aps_tf.search(model, digits_dataset(), budget=0.5, workdir=self.dir)
    with self.assertRaisesRegex(errors.UserError, "steps: expected an integer >= 2"):
      aps_tf.search(model, digits_dataset(), steps=1, workdir=self.dir)
    with self.assertRaisesRegex(errors.UserError, "unknown config field search.nope"):
      aps_tf.search(model, digits_dataset(), overrides={"search.nope": 1}, workdir=self.dir)

  def test_build_config_steps_and_budget(self):
    model = functional_cnn(size=8)
    path = os.path.join(self.dir, "m.keras")
    model.save(path)
    source = api._data_source(digits_dataset(), self.dir)  # pylint: disable=protected-access
    self.assertTrue(source.startswith("python:workdir:"))
    cfg = api.build_config(path, source, budget=aps_tf.Params(0.25), steps=6)
    self.assertEqual((cfg.search.epochs, cfg.search.steps_per_epoch, cfg.search.warmup_epochs),
                     (6, 1, 3))
    params = flops_lib.count_keras_model(model)["params"]
    self.assertAlmostEqual(cfg.search.reward.target, 0.25 * params, delta=1e-6 * params)
    self.assertEqual(cfg.data.image_size, 8)
    # 60 examples: 12 test, 24 train, 24 reward; the batches fit the splits.
    self.assertLessEqual(cfg.search.batch_size, 24)

  def test_export_needs_its_search(self):
    with self.assertRaisesRegex(errors.UserError, "pass search="):
      aps_tf.export(functional_cnn(), self.dir)



class InitFromKerasTest(absltest.TestCase):
  """train.init='keras' and the uniform baseline of aps_tf.experiments.compress."""

  def test_leading_channels_and_uniform_widths(self):
    from aps_tf import models  # pylint: disable=g-import-not-at-top
    from aps_tf.experiments import compress  # pylint: disable=g-import-not-at-top
    from aps_tf.models import graph_dense  # pylint: disable=g-import-not-at-top
    import ml_collections  # pylint: disable=g-import-not-at-top
    model, path = pretrained_cnn_file()
    cfg = ml_collections.ConfigDict({"model": {"keras_file": path}})
    t = models.from_keras(model)
    full = flops_lib.count_keras_model(model)["flops"]
    factor, widths = compress.uniform_widths(t, 0.5 * full)
    self.assertBetween(factor, 0.6, 0.8)
    self.assertAlmostEqual(flops_lib.count(t, widths, "full")["flops"] / full, 0.5, delta=0.02)
    # The widest child from the user's weights is the user's model.
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype(np.float32)
    wide = graph_dense.build(t, list(t.base_widths))
    self.assertEqual(user_model.init_from_keras(wide, cfg)["layers"], 13)
    np.testing.assert_allclose(wide(x), model(x), atol=1e-5)
    # A thinner child holds each layer's first channels.
    thin = graph_dense.build(t, widths)
    user_model.init_from_keras(thin, cfg)
    k = thin.get_layer("mid").get_weights()[0]
    np.testing.assert_array_equal(k, model.get_layer("mid").get_weights()[0][:, :, :k.shape[2],
                                                                            :k.shape[3]])

  def test_concatenate_refused(self):
    import ml_collections  # pylint: disable=g-import-not-at-top
    tmp = self.enter_context(tempfile.TemporaryDirectory())
    path = os.path.join(tmp, "cat.keras")
    functional_cnn().save(path)
    cfg = ml_collections.ConfigDict({"model": {"keras_file": path}})
    with self.assertRaisesRegex(user_model.UserModelError, "Concatenate.*train.init='supernet'"):
      user_model.init_from_keras(functional_cnn(), cfg)


class ChildModelTest(absltest.TestCase):

  def test_keras_weights_through_the_supernet_are_the_first_channels(self):
    import ml_collections  # pylint: disable=g-import-not-at-top
    from aps_tf import archfile  # pylint: disable=g-import-not-at-top
    from aps_tf import models  # pylint: disable=g-import-not-at-top
    tmp = self.enter_context(tempfile.TemporaryDirectory())
    model, path = pretrained_cnn_file()
    cfg = api.build_config(path, "digits", budget=aps_tf.Flops(0.5))
    t = models.topology_from_config(cfg.model, (16, 16, 1), 10)
    arch = archfile.make(t, t.space.widths([2, 1, 2, 3, 1]))
    result = api.SearchResult(arch=arch, workdir=tmp, config=cfg, model_file=path)
    child = result.child_model("keras")
    self.assertEqual([l.name for l in child.layers], [l.name for l in model.layers])
    sliced = result.child_model(None)
    user_model.init_from_keras(sliced, ml_collections.ConfigDict({"model": {"keras_file": path}}))
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype(np.float32)
    np.testing.assert_allclose(child(x), sliced(x), atol=1e-6)
    with self.assertRaisesRegex(errors.UserError, "weights: expected 'supernet', 'keras'"):
      result.child_model("imagenet")


if __name__ == "__main__":
  absltest.main()
