"""End to end on a user's own model: a .keras file and an image folder written
here, through the binaries' command lines (aps_tf.search / aps_tf.train /
export.export_model, in one process) and through the Python API (aps_tf.search, retrain,
aps_tf.export). Few steps: these check that every stage runs and connects."""

import json
import os
import tempfile

from absl.testing import absltest
import keras
import numpy as np
import pytest
import tensorflow as tf

import aps_tf
from aps_tf import flops as flops_lib
from tests import test_api
from tests import test_data_sources
from tests.helpers import binary_driver

SHORT = ["--config.search.epochs=2", "--config.search.warmup_epochs=1",
         "--config.search.steps_per_epoch=2", "--config.search.batch_size=8",
         "--config.search.rescore_batches=2", "--config.search.top_n=2",
         "--config.search.beam_width=2", "--noprogress"]


@pytest.mark.slow
class BinariesTest(absltest.TestCase):

  def test_keras_file_and_image_folder_and_an_unsupported_model(self):
    # The binaries' command lines in one process (tests/helpers/binary_driver.py:
    # one TensorFlow import for the four runs; the console scripts' own start-up:
    # tests/test_package.py).
    tmp = self.enter_context(tempfile.TemporaryDirectory())
    images = test_data_sources._write_folder(os.path.join(tmp, "images"), per_class=8)  # pylint: disable=protected-access
    model = test_api.functional_cnn(size=12, channels=3, classes=3, rescale=True)
    path = os.path.join(tmp, "user.keras")
    model.save(path)
    # A grouped convolution: not a model the importer supports.
    x = inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="c1")(x)
    x = keras.layers.Conv2D(4, 3, groups=2, name="grouped")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    grouped = os.path.join(tmp, "grouped.keras")
    keras.Model(inp, keras.layers.Dense(10)(x)).save(grouped)
    search, retrain, base = (os.path.join(tmp, d) for d in ("search", "retrain", "serving"))
    common = ["--config=configs/keras_model.py", f"--config.model.keras_file={path}",
              f"--config.data.source=folder:{images}"]
    r = binary_driver.run_in_subprocess([
        {"name": "unsupported", "module": "aps_tf.search",
         "argv": ["--config=configs/keras_model.py", f"--workdir={tmp}/w",
                  f"--config.model.keras_file={grouped}", "--noprogress"]},
        {"name": "search", "module": "aps_tf.search",
         "argv": common + [f"--workdir={search}"] + SHORT},
        {"name": "train", "module": "aps_tf.train",
         "argv": common + [f"--arch={search}/arch.json", f"--workdir={retrain}",
                           "--config.train.epochs=1", "--config.train.batch_size=8",
                           "--config.train.init=supernet",
                           f"--config.train.supernet_workdir={search}",
                           "--config.export.parity_examples=16",
                           "--config.export.representative_examples=8",
                           "--config.export.latency_runs=2", "--noprogress"]},
        {"name": "export", "module": "export.export_model",
         "argv": [f"--workdir={retrain}", f"--export_base={base}", "--model_name=mine",
                  "--formats=saved_model,tflite_float32"]}], tmp)
    # The unsupported model: exit 2 with one line naming the layer.
    self.assertEqual(r["unsupported"]["code"], 2, r["unsupported"]["stderr"][-3000:])
    errors = [l for l in r["unsupported"]["stderr"].splitlines() if l.startswith("error:")]
    self.assertLen(errors, 1)
    self.assertIn("'grouped'", errors[0])
    self.assertIn("Conv2D", errors[0])
    for name in ("search", "train", "export"):
      self.assertEqual(r[name]["code"], 0, r[name]["stderr"][-3000:])
    with open(os.path.join(search, "config.json")) as f:
      cfg = json.load(f)
    self.assertEqual((cfg["data"]["image_size"], cfg["data"]["normalization"]), (12, "none"))
    full = flops_lib.count_keras_model(model)["flops"]
    self.assertAlmostEqual(cfg["search"]["reward"]["target"], 0.5 * full, delta=1)
    child = keras.models.load_model(os.path.join(retrain, "model.keras"))
    self.assertEqual([l.name for l in child.layers], [l.name for l in model.layers])
    with open(os.path.join(base, "mine", "1", "export_manifest.json")) as f:
      pre = json.load(f)["preprocessing"]
    self.assertEqual(pre["class_names"], ["cat", "dog", "eel"])
    self.assertEqual((pre["normalization"], pre["image_size"]), ("none", 12))


@pytest.mark.slow
class PythonApiTest(absltest.TestCase):

  def test_search_retrain_export(self):
    tmp = self.enter_context(tempfile.TemporaryDirectory())
    model = test_api.functional_cnn(size=8)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (80, 8, 8, 1)).astype(np.uint8)
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(80) % 10)).batch(16)
    result = aps_tf.search(model, ds, budget=aps_tf.Flops(0.5), workdir=f"{tmp}/s", steps=4,
                           overrides={"search.batch_size": 8, "search.top_n": 2,
                                      "search.beam_width": 2, "search.rescore_batches": 2},
                           progress=False)
    self.assertEqual(result.arch["widths"], result.widths)
    for weights in ("supernet", "keras", None):
      child = result.child_model(weights=weights)
      self.assertEqual([l.name for l in child.layers], [l.name for l in model.layers])
      self.assertEqual(flops_lib.count_keras_model(child)["flops"],
                       result.arch["flops"]["full"])
    retrained = result.retrain(epochs=1, overrides={"train.batch_size": 16}, progress=False)
    self.assertIn("test_accuracy", retrained.metrics)
    report = aps_tf.export(retrained, f"{tmp}/serving", model_name="mine",
                           formats=["saved_model", "tflite_float32"])
    self.assertTrue(os.path.isdir(report["path"]))
    # Rerunning the same search on the same workdir resumes and gives the same pick.
    again = aps_tf.search(model, ds, budget=aps_tf.Flops(0.5), workdir=f"{tmp}/s", steps=4,
                          overrides={"search.batch_size": 8, "search.top_n": 2,
                                     "search.beam_width": 2, "search.rescore_batches": 2},
                          progress=False)
    self.assertEqual(again.widths, result.widths)


if __name__ == "__main__":
  absltest.main()
