"""Tests of export/: SavedModel signatures, TFLite parity, layout, atomicity, QAT."""

import json
import os
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import keras
import numpy as np
import tensorflow as tf

from aps_tf import data
from export import exporter
from export import saved_model as saved_model_lib
from export import tflite as tflite_lib
from tests.helpers import train_util as util

FAST_FORMATS = ["saved_model", "tflite_float32", "tflite_float16", "tflite_dynamic",
                "tflite_int8"]
# (max abs diff of probabilities, min top-1 agreement) against Keras.
THRESHOLDS = {"saved_model": (1e-4, 1.0), "tflite_float32": (1e-4, 1.0),
              "tflite_float16": (1e-2, 0.98), "tflite_dynamic": (None, 0.9),
              "tflite_int8": (None, 0.9), "tflite_qat_int8": (None, 0.9)}


class ExportTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.workdir, cls.cfg = util.trained_workdir(cls.tmp, epochs=4)
    cls.base = os.path.join(cls.tmp, "serving")
    cls.report = exporter.export(cls.workdir, cls.base, "digits", formats=FAST_FORMATS)
    cls.results = {r["format"]: r for r in cls.report["results"]}
    cls.version_dir = os.path.join(cls.base, "digits", "1")
    cls.model = keras.models.load_model(os.path.join(cls.workdir, "model.keras"))

  @parameterized.parameters(*FAST_FORMATS)
  def test_parity(self, fmt):
    r = self.results[fmt]
    max_diff, min_agree = THRESHOLDS[fmt]
    self.assertGreaterEqual(r["top1_agreement"], min_agree, r)
    if max_diff is not None:
      self.assertLess(r["max_abs_diff"], max_diff, r)
    self.assertEqual(r["examples"], 120)
    self.assertGreater(r["accuracy"], 0.5)
    if fmt != "saved_model":
      self.assertGreater(r["latency_ms"], 0)
      self.assertTrue(os.path.exists(os.path.join(self.version_dir, r["file"])))

  def test_int8_io(self):
    with open(os.path.join(self.version_dir, "tflite", "model_int8.tflite"), "rb") as f:
      runner = tflite_lib.Runner(f.read())
    self.assertEqual(runner.inp["dtype"], np.int8)
    self.assertEqual(runner.out["dtype"], np.int8)

  def test_layout(self):
    names = set(os.listdir(self.version_dir))
    self.assertContainsSubset({"saved_model.pb", "variables", "assets.extra", "tflite",
                               "export_report.json", "export_report.md"}, names)
    self.assertEqual(sorted(os.listdir(os.path.join(self.base, "digits"))), ["1"])
    with open(os.path.join(self.base, "models.config")) as f:
      text = f.read()
    self.assertIn('name: "digits"', text)
    self.assertIn('base_path: "/models/digits"', text)
    self.assertIn('model_platform: "tensorflow"', text)
    for name in ("export_report.json", "export_report.md"):
      self.assertTrue(os.path.exists(os.path.join(self.workdir, name)))
    with open(os.path.join(self.version_dir, "export_report.md")) as f:
      md = f.read()
    self.assertIn("| tflite_int8 |", md)
    with open(os.path.join(self.version_dir, "export_report.json")) as f:
      self.assertEqual(json.load(f)["formats"], FAST_FORMATS)

  def test_warmup_records(self):
    logs = saved_model_lib.read_warmup(self.version_dir)
    self.assertLen(logs, 2)
    loaded = tf.saved_model.load(self.version_dir)
    for log in logs:
      req = log.predict_log.request
      self.assertEqual(req.model_spec.signature_name, "serving_default")
      images = tf.make_ndarray(req.inputs["images"])
      self.assertEqual(images.dtype, np.uint8)
      out = loaded.signatures["serving_default"](images=tf.constant(images))
      self.assertEqual(out["probabilities"].shape[0], images.shape[0])

  def test_signatures(self):
    loaded = tf.saved_model.load(self.version_dir)
    raw = data.raw_images(self.cfg.data, "test", 5)
    x = data.serving_preprocess(self.cfg.data, raw)
    want = tf.nn.softmax(self.model(x)).numpy()
    out = loaded.signatures["serving_default"](images=tf.constant(raw))
    np.testing.assert_allclose(out["probabilities"], want, atol=1e-5)
    np.testing.assert_array_equal(out["classes"], want.argmax(-1))
    pre = loaded.signatures["predict_preprocessed"](images=x)
    np.testing.assert_allclose(pre["probabilities"], want, atol=1e-5)

  @parameterized.named_parameters(
      ("float_to_raw", "serving_default", np.float32, (2, 16, 16, 1), "uint8"),
      ("uint8_to_preprocessed", "predict_preprocessed", np.uint8, (2, 16, 16, 1), "float"),
      ("wrong_size", "serving_default", np.uint8, (2, 8, 8, 1), r"shape \[N, 16, 16, 1\]"),
      ("wrong_channels", "predict_preprocessed", np.float32, (2, 16, 16, 3),
       r"shape \[N, 16, 16, 1\]"),
      ("unbatched", "serving_default", np.uint8, (16, 16, 1), "batch of images"),
      ("no_channels", "predict_preprocessed", np.float32, (2, 16, 16), "batch of images"))
  def test_signature_input_validation(self, signature, dtype, shape, message):
    loaded = tf.saved_model.load(self.version_dir)
    with self.assertRaisesRegex((tf.errors.InvalidArgumentError, TypeError, ValueError), message):
      loaded.signatures[signature](images=tf.zeros(shape, dtype))

  def test_next_version_and_immutable_versions(self):
    base = os.path.join(self.tmp, "versions")
    r = exporter.export(self.workdir, base, "m", formats=["tflite_float32"])
    self.assertEqual(r["version"], 1)
    os.makedirs(os.path.join(base, "m", "7"))
    # The same model again: the version holding it is reused, nothing is written.
    r = exporter.export(self.workdir, base, "m", formats=["tflite_float32"])
    self.assertEqual((r["version"], r.get("reused")), (1, True))
    self.assertEqual(sorted(os.listdir(os.path.join(base, "m"))), ["1", "7"])
    r = exporter.export(self.workdir, base, "m", formats=["tflite_float32"],
                        force_new_version=True)
    self.assertEqual(r["version"], 8)
    self.assertFalse(r.get("reused"))
    with self.assertRaisesRegex(exporter.ExportError, "already exists"):
      exporter.export(self.workdir, base, "m", version=8, formats=["tflite_float32"])
    # Other formats are other content: a new version.
    r = exporter.export(self.workdir, base, "m", formats=["tflite_float16"])
    self.assertEqual((r["version"], r.get("reused")), (9, None))

  @parameterized.parameters("tflite_float16", "tflite_int8", "saved_model")
  def test_interrupted_export_leaves_nothing(self, failing):
    base = os.path.join(self.tmp, f"interrupted_{failing}")
    formats = ["saved_model", "tflite_float32", "tflite_float16", "tflite_int8"]
    real_convert, real_sm = tflite_lib.convert, saved_model_lib.export

    def convert(model, fmt, rep=None):
      if fmt == failing:
        raise RuntimeError("boom")
      return real_convert(model, fmt, rep)

    def sm(*args, **kwargs):
      real_sm(*args, **kwargs)
      raise KeyboardInterrupt  # after files were written

    with mock.patch.object(tflite_lib, "convert", convert), \
        mock.patch.object(saved_model_lib, "export", sm if failing == "saved_model" else real_sm):
      with self.assertRaises((RuntimeError, KeyboardInterrupt)):
        exporter.export(self.workdir, base, "digits", formats=formats)
    self.assertEqual(os.listdir(os.path.join(base, "digits")), [])
    self.assertFalse(os.path.exists(os.path.join(base, "models.config")))

  def test_unknown_format(self):
    with self.assertRaisesRegex(exporter.ExportError, r"unknown format\(s\) \['onnx'\]"):
      exporter.export(self.workdir, os.path.join(self.tmp, "u"), "m", formats=["onnx"])

  def test_missing_workdir(self):
    with self.assertRaisesRegex(exporter.ExportError, "does not exist"):
      exporter.export(os.path.join(self.tmp, "nope"), self.base, "m")
    empty = os.path.join(self.tmp, "empty")
    os.makedirs(empty, exist_ok=True)
    with self.assertRaisesRegex(exporter.ExportError, "model.keras not found"):
      exporter.export(empty, self.base, "m")

  def test_model_and_arch_mismatch(self):
    other = os.path.join(self.tmp, "mismatch")
    shutil.copytree(self.workdir, other, ignore=shutil.ignore_patterns("checkpoints"))
    util.write_arch(self.cfg, os.path.join(other, "arch.json"), index=2)
    with self.assertRaisesRegex(exporter.ExportError, "does not match"):
      exporter.export(other, self.base, "m")

  def test_binary(self):
    base = os.path.join(self.tmp, "binary")
    r = util.run_binary("export.export_model", f"--workdir={self.workdir}",
                        f"--export_base={base}", "--model_name=bin", "--version=3",
                        "--formats=tflite_float32")
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    self.assertIn("| tflite_float32 |", r.stdout)
    self.assertTrue(os.path.exists(os.path.join(base, "bin", "3", "tflite",
                                                "model_float32.tflite")))
    r = util.run_binary("export.export_model", f"--workdir={self.workdir}",
                        f"--export_base={base}", "--model_name=bin", "--formats=onnx")
    self.assertEqual(r.returncode, 2)
    self.assertIn("unknown format(s) ['onnx']", r.stderr)
    r = util.run_binary("export.export_model", f"--workdir={self.tmp}/missing",
                        f"--export_base={base}", "--model_name=bin")
    self.assertEqual(r.returncode, 2)
    self.assertIn("does not exist", r.stderr)
    # Idempotent: the same model and formats reuse version 3.
    r = util.run_binary("export.export_model", f"--workdir={self.workdir}",
                        f"--export_base={base}", "--model_name=bin", "--formats=tflite_float32")
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    self.assertIn("reused", r.stdout)
    self.assertEqual(os.listdir(os.path.join(base, "bin")), ["3"])


class QATTest(absltest.TestCase):

  def test_qat_int8(self):
    tmp = tempfile.mkdtemp()
    workdir, _ = util.trained_workdir(tmp, epochs=4)
    report = exporter.export(workdir, os.path.join(tmp, "serving"), "digits",
                             formats=["tflite_int8", "tflite_qat_int8"])
    results = {x["format"]: x for x in report["results"]}
    r, ptq = results["tflite_qat_int8"], results["tflite_int8"]
    self.assertEqual(r["input_dtype"], "int8")
    self.assertGreaterEqual(r["top1_agreement"], THRESHOLDS["tflite_qat_int8"][1], r)
    self.assertGreater(r["accuracy"], 0.5)
    self.assertEqual(r["qat"]["qat_epochs"], 1)
    self.assertLess(r["qat"]["rebuild_max_abs_diff"], 1e-5)
    # Every fake-quant range is set from float activations before fine-tuning
    # (tfmot's [-6, 6] start cost QAT ~7 points against post-training int8).
    self.assertGreater(r["qat"]["calibrated_ranges"], 0, r["qat"])
    self.assertEqual(r["qat"]["uncalibrated_ranges"], [], r["qat"])
    self.assertLess(r["qat"]["calibrated_max_abs_diff"], 0.25, r["qat"])
    # Accuracy, not agreement: fine-tuning keeps training this under-trained child.
    self.assertGreaterEqual(r["accuracy"], ptq["accuracy"] - 0.03, (r, ptq))


if __name__ == "__main__":
  absltest.main()
