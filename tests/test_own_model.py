"""End to end on a user's own model: a .keras file and an image folder written
here, through the binaries (python -m aps_tf.search / aps_tf.train /
export.export_model) and through the Python API (aps_tf.search, retrain,
aps_tf.export). Few steps: these check that every stage runs and connects."""

import json
import os
import subprocess
import sys
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHORT = ["--config.search.epochs=2", "--config.search.warmup_epochs=1",
         "--config.search.steps_per_epoch=2", "--config.search.batch_size=8",
         "--config.search.rescore_batches=2", "--config.search.top_n=2",
         "--config.search.beam_width=2", "--noprogress"]


def _run(*args):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=ROOT,
                        env=dict(os.environ, PYTHONPATH=ROOT), timeout=900)


@pytest.mark.slow
class BinariesTest(absltest.TestCase):

  def test_keras_file_and_image_folder(self):
    tmp = self.enter_context(tempfile.TemporaryDirectory())
    images = test_data_sources._write_folder(os.path.join(tmp, "images"), per_class=8)  # pylint: disable=protected-access
    model = test_api.functional_cnn(size=12, channels=3, classes=3, rescale=True)
    path = os.path.join(tmp, "user.keras")
    model.save(path)
    search, retrain, base = (os.path.join(tmp, d) for d in ("search", "retrain", "serving"))
    common = ["--config=configs/keras_model.py", f"--config.model.keras_file={path}",
              f"--config.data.source=folder:{images}"]
    r = _run("aps_tf.search", *common, f"--workdir={search}", *SHORT)
    self.assertEqual(r.returncode, 0, r.stderr[-3000:])
    with open(os.path.join(search, "config.json")) as f:
      cfg = json.load(f)
    self.assertEqual((cfg["data"]["image_size"], cfg["data"]["normalization"]), (12, "none"))
    full = flops_lib.count_keras_model(model)["flops"]
    self.assertAlmostEqual(cfg["search"]["reward"]["target"], 0.5 * full, delta=1)
    r = _run("aps_tf.train", *common, f"--arch={search}/arch.json", f"--workdir={retrain}",
             "--config.train.epochs=1", "--config.train.batch_size=8",
             "--config.train.init=supernet", f"--config.train.supernet_workdir={search}",
             "--noprogress")
    self.assertEqual(r.returncode, 0, r.stderr[-3000:])
    child = keras.models.load_model(os.path.join(retrain, "model.keras"))
    self.assertEqual([l.name for l in child.layers], [l.name for l in model.layers])
    r = _run("export.export_model", f"--workdir={retrain}", f"--export_base={base}",
             "--model_name=mine", "--formats=saved_model,tflite_float32")
    self.assertEqual(r.returncode, 0, r.stderr[-3000:])
    with open(os.path.join(base, "mine", "1", "export_manifest.json")) as f:
      pre = json.load(f)["preprocessing"]
    self.assertEqual(pre["class_names"], ["cat", "dog", "eel"])
    self.assertEqual((pre["normalization"], pre["image_size"]), ("none", 12))

  def test_unsupported_model_exits_2_with_one_line(self):
    tmp = self.enter_context(tempfile.TemporaryDirectory())
    x = inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, name="c1")(x)
    x = keras.layers.Conv2D(4, 3, groups=2, name="grouped")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    path = os.path.join(tmp, "grouped.keras")
    keras.Model(inp, keras.layers.Dense(10)(x)).save(path)
    r = _run("aps_tf.search", "--config=configs/keras_model.py", f"--workdir={tmp}/w",
             f"--config.model.keras_file={path}", "--noprogress")
    self.assertEqual(r.returncode, 2, r.stderr[-3000:])
    errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    self.assertLen(errors, 1)
    self.assertIn("'grouped'", errors[0])
    self.assertIn("Conv2D", errors[0])


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
