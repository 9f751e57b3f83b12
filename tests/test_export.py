"""Tests of export/: one SavedModel as the source of every LiteRT file, signatures,
parity, layout, atomicity, models.config, the verify step, QAT."""

import json
import os
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import keras
import numpy as np
import pytest
import tensorflow as tf

from aps_tf import data
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from aps_tf.export import exporter
from aps_tf.export import litert_metadata
from aps_tf.export import saved_model as saved_model_lib
from aps_tf.export import tflite as tflite_lib
from aps_tf.export import verify as verify_lib
from tests.helpers import binary_driver
from tests.helpers import shared_runs
from tests.helpers import train_util as util

# Every test reads a trained model and its export (tests/helpers/shared_runs.py).
pytestmark = pytest.mark.slow

FAST_FORMATS = list(shared_runs.EXPORT_FORMATS)
# (max abs diff of probabilities, min top-1 agreement) against Keras.
THRESHOLDS = {"saved_model": (1e-4, 1.0), "tflite_float32": (1e-4, 1.0),
              "tflite_float16": (1e-2, 0.98), "tflite_dynamic": (None, 0.9),
              "tflite_int8": (None, 0.9), "tflite_qat_int8": (None, 0.9)}


class ExportTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # The session's shared export (tests/helpers/shared_runs.py) for the read-only
    # checks; a private copy of its trained workdir for the tests that export again.
    cls.tmp = tempfile.mkdtemp()
    shared = shared_runs.exported()
    cls.exported_workdir, cls.base = shared["workdir"], shared["base"]
    cls.version_dir, cls.sources = shared["version_dir"], shared["sources"]
    cls.report = shared["report"]
    cls.workdir, cls.cfg = shared_runs.trained_copy(cls.tmp)
    cls.results = {r["format"]: r for r in cls.report["results"]}
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

  def test_every_litert_file_converted_from_the_one_saved_model(self):
    # All from the same build directory's SavedModel, one call per format.
    self.assertEqual([fmt for _, _, fmt in self.sources], FAST_FORMATS[1:])
    self.assertLen({(d, name) for d, name, _ in self.sources}, 1, self.sources)
    self.assertEqual(self.sources[0][1], "saved_model")
    loaded = tf.saved_model.load(self.version_dir)
    self.assertCountEqual(loaded.signatures.keys(), saved_model_lib.SIGNATURES)
    litert = loaded.signatures[saved_model_lib.LITERT_SIGNATURE]
    x = data.serving_preprocess(self.cfg.data, data.raw_images(self.cfg.data, "test", 1))
    np.testing.assert_allclose(litert(images=x)["probabilities"],
                               tf.nn.softmax(self.model(x)).numpy(), atol=1e-5)

  def test_keras_entry_point_matches_the_exported_file(self):
    # convert(model) (the per-layer latency tool's entry point) uses the export's settings.
    with open(os.path.join(self.version_dir, "tflite", "model_float16.tflite"), "rb") as f:
      exported = f.read()
    runner_a, runner_b = tflite_lib.LiteRTModel(exported), tflite_lib.LiteRTModel(
        tflite_lib.convert(self.model, "tflite_float16"))
    x = data.serving_preprocess(self.cfg.data, data.raw_images(self.cfg.data, "test", 4)).numpy()
    np.testing.assert_allclose(runner_a.predict(x), runner_b.predict(x), atol=1e-6)
    with self.assertRaisesRegex(ValueError, "tflite_qat_int8"):
      tflite_lib.convert(self.model, "tflite_qat_int8")

  def test_models_config_parses_as_model_server_config(self):
    with open(os.path.join(self.base, "models.config")) as f:
      config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    self.assertEqual((entry.name, entry.base_path, entry.model_platform),
                     ("digits", "/models/digits", "tensorflow"))
    self.assertEqual(entry.model_version_policy.latest.num_versions, 1)
    two = exporter.models_config(["a", "b"], serving_root="/srv/")
    self.assertEqual([c.base_path for c in two.model_config_list.config], ["/srv/a", "/srv/b"])

  @parameterized.named_parameters(
      ("tflite_name", {"format": "tflite_float32", "target_ms": 2.0, "predicted_ms": 1.5},
       "tflite_float32", True),
      ("short_name", {"format": "float32", "target_ms": 2.0, "predicted_ms": 1.5},
       "tflite_float32", True),
      ("not_exported", {"format": "tflite_qat_int8", "target_ms": 2.0, "predicted_ms": 1.5},
       "tflite_qat_int8", False))
  def test_verify_alone_reports_latency_budget(self, budget, fmt, measured):
    export_dir = os.path.join(self.tmp, "verify_" + self._testMethodName[-12:])
    shutil.copytree(self.version_dir, export_dir)
    arch = json.load(open(os.path.join(export_dir, "arch.json")))
    arch["latency"] = budget
    with open(os.path.join(export_dir, "arch.json"), "w") as f:
      json.dump(arch, f)
    report = verify_lib.verify(export_dir, write=False)
    got = report["latency_budget"]
    self.assertEqual((got["format"], got["target_ms"], got["predicted_ms"]),
                     (fmt, 2.0, 1.5))
    if measured:
      want = {r["format"]: r for r in report["results"]}[fmt]["latency_ms"]
      self.assertEqual(got["measured_ms"], want)
      self.assertGreater(want, 0)
    else:
      self.assertIsNone(got["measured_ms"])
    self.assertIn(f"Latency budget ({fmt}): target 2.000 ms", verify_lib.markdown(report))

  def test_verify_refuses_a_directory_that_is_not_an_export(self):
    with self.assertRaisesRegex(exporter.ExportError, "export_manifest.json not found"):
      verify_lib.verify(self.tmp)

  @parameterized.parameters("tflite_float32", "tflite_int8")
  def test_litert_metadata_matches_the_manifest(self, fmt):
    manifest = json.load(open(os.path.join(self.version_dir, exporter.MANIFEST)))
    pre = manifest["preprocessing"]
    info = data.dataset_info(self.cfg.data)
    self.assertEqual(pre["mean"], list(info.mean))
    self.assertEqual(pre["std"], list(info.std))
    size = int(self.cfg.data.image_size)
    self.assertEqual(pre["input_shape"], [1, size, size, info.image_shape[-1]])
    self.assertEqual(pre["labels"], [str(d) for d in range(10)])  # digits
    with open(os.path.join(self.version_dir, manifest["files"][fmt]), "rb") as f:
      content = f.read()
    meta = litert_metadata.read(content)
    # The JSON entry is the manifest's record plus the file's own input.
    self.assertEqual(meta["preprocessing"], dict(pre, **manifest["litert_inputs"][fmt]))
    runner = tflite_lib.LiteRTModel(content)
    inputs = manifest["litert_inputs"][fmt]
    self.assertEqual(inputs["input_dtype"], np.dtype(runner.inp["dtype"]).name)
    if fmt == "tflite_int8":
      self.assertEqual((inputs["input_quantization"]["scale"],
                        inputs["input_quantization"]["zero_point"]),
                       tuple(runner.inp["quantization"]))
    # The standard TFLITE_METADATA entry, read back field by field.
    std = meta["standard"]
    np.testing.assert_allclose(std["mean"], pre["mean"], rtol=1e-6)
    np.testing.assert_allclose(std["std"], pre["std"], rtol=1e-6)
    self.assertEqual((std["width"], std["height"], std["color_space"]),
                     (size, size, "GRAYSCALE"))
    self.assertEqual(std["associated_files"], [{"name": "labels.txt", "type": 2}])
    self.assertEqual(meta["files"]["labels.txt"].splitlines(), pre["labels"])
    # The metadata's recipe alone gives the input the serving signature computes.
    raw = data.raw_images(self.cfg.data, "test", 4)
    x = (raw.astype(np.float32) - np.array(std["mean"])) / np.array(std["std"])
    np.testing.assert_allclose(
        x, data.serving_preprocess(self.cfg.data, tf.constant(raw)).numpy(), atol=1e-4)

  def test_verify_refuses_metadata_that_differs_from_the_manifest(self):
    export_dir = os.path.join(self.tmp, "verify_bad_metadata")
    shutil.copytree(self.version_dir, export_dir)
    path = os.path.join(export_dir, exporter.MANIFEST)
    manifest = json.load(open(path))
    manifest["preprocessing"]["mean"] = [0.0]
    with open(path, "w") as f:
      json.dump(manifest, f)
    with self.assertRaisesRegex(exporter.ExportError, r"model_float32.tflite.*mean"):
      verify_lib.verify(export_dir, write=False)

  def test_int8_io(self):
    with open(os.path.join(self.version_dir, "tflite", "model_int8.tflite"), "rb") as f:
      runner = tflite_lib.LiteRTModel(f.read())
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
      self.assertTrue(os.path.exists(os.path.join(self.exported_workdir, name)))
    with open(os.path.join(self.version_dir, "export_report.md")) as f:
      md = f.read()
    self.assertIn("| tflite_int8 |", md)
    with open(os.path.join(self.version_dir, "export_report.json")) as f:
      self.assertEqual(json.load(f)["formats"], FAST_FORMATS)
    with open(os.path.join(self.version_dir, exporter.MANIFEST)) as f:
      pre = json.load(f)["preprocessing"]
    # The constants the served images are normalised with (digits' statistics).
    self.assertEqual((pre["source"], pre["normalization"]), ("digits", "mean_std"))
    self.assertEqual((pre["mean"], pre["std"], pre["channels"]), ([77.85], [95.85], 1))

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

  def _shared_file(self, path, fmt, rep=None):
    """A stand-in for tflite.convert_saved_model: the shared export's file of `fmt`."""
    del path, rep
    with open(os.path.join(self.version_dir, "tflite", tflite_lib.FILENAMES[fmt]), "rb") as f:
      return f.read()

  def test_next_version_and_immutable_versions(self):
    # Versioning only: builds without the parity/latency verification (the shared
    # export and test_binary verify), and the LiteRT files are the shared
    # export's (the conversion itself: the shared export, test_binary).
    self.enter_context(mock.patch.object(tflite_lib, "convert_saved_model", self._shared_file))
    base = os.path.join(self.tmp, "versions")
    r = exporter.export(self.workdir, base, "m", formats=["tflite_float32"],
                        verify=False)
    self.assertEqual(r["version"], 1)
    os.makedirs(os.path.join(base, "m", "7"))
    # The same model again: the version holding it is reused, nothing is written.
    r = exporter.export(self.workdir, base, "m", formats=["tflite_float32"],
                        verify=False)
    self.assertEqual((r["version"], r.get("reused")), (1, True))
    self.assertEqual(sorted(os.listdir(os.path.join(base, "m"))), ["1", "7"])
    r = exporter.export(self.workdir, base, "m", formats=["tflite_float32"],
                        force_new_version=True, verify=False)
    self.assertEqual(r["version"], 8)
    self.assertFalse(r.get("reused"))
    with self.assertRaisesRegex(exporter.ExportError, "already exists"):
      exporter.export(self.workdir, base, "m", version=8, formats=["tflite_float32"],
                      verify=False)
    # Other formats are other content: a new version.
    r = exporter.export(self.workdir, base, "m", formats=["tflite_float16"],
                        verify=False)
    self.assertEqual((r["version"], r.get("reused")), (9, None))

  @parameterized.parameters("tflite_float16", "tflite_int8", "saved_model")
  def test_interrupted_export_leaves_nothing(self, failing):
    base = os.path.join(self.tmp, f"interrupted_{failing}")
    formats = ["saved_model", "tflite_float32", "tflite_float16", "tflite_int8"]
    real_sm = saved_model_lib.export

    def convert(path, fmt, rep=None):
      if fmt == failing:
        raise RuntimeError("boom")
      # The shared export's file of that format (the same model) instead of a
      # conversion (seconds each): the files are written before the failure either way.
      return self._shared_file(path, fmt, rep)

    def sm(*args, **kwargs):
      real_sm(*args, **kwargs)
      raise KeyboardInterrupt  # after files were written

    with mock.patch.object(tflite_lib, "convert_saved_model", convert), \
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
      exporter.export(os.path.join(self.tmp, "nope"), os.path.join(self.tmp, "b"), "m")
    empty = os.path.join(self.tmp, "empty")
    os.makedirs(empty, exist_ok=True)
    with self.assertRaisesRegex(exporter.ExportError, "model.keras not found"):
      exporter.export(empty, os.path.join(self.tmp, "b"), "m")

  def test_model_and_arch_mismatch(self):
    other = os.path.join(self.tmp, "mismatch")
    shutil.copytree(self.workdir, other, ignore=shutil.ignore_patterns("ckpt"))
    util.write_arch(self.cfg, os.path.join(other, "arch.json"), index=2)
    with self.assertRaisesRegex(exporter.ExportError, "does not match"):
      exporter.export(other, os.path.join(self.tmp, "b"), "m")

  def test_binary(self):
    # The two binaries' command lines, in one process (tests/helpers/binary_driver.py:
    # one TensorFlow import for the four runs).
    base = os.path.join(self.tmp, "binary")
    export_args = [f"--workdir={self.workdir}", f"--export_base={base}", "--model_name=bin"]
    r = binary_driver.run_in_subprocess([
        {"name": "export", "module": "export.export_model",
         "argv": export_args + ["--version=3", "--formats=tflite_float32"]},
        # Idempotent: the same model and formats reuse version 3.
        {"name": "again", "module": "export.export_model",
         "argv": export_args + ["--formats=tflite_float32"]},
        # verify writes the report again.
        {"name": "verify", "module": "export.verify", "argv": [f"--export_dir={base}/bin/3"],
         "remove": [os.path.join(base, "bin", "3", "export_report.md")]},
        {"name": "not_an_export", "module": "export.verify",
         "argv": [f"--export_dir={base}/bin"]}], self.tmp)
    for name in ("export", "again", "verify"):
      self.assertEqual(r[name]["code"], 0, r[name]["stderr"][-2000:])
    self.assertIn("| tflite_float32 |", r["export"]["stdout"])
    self.assertTrue(os.path.exists(os.path.join(base, "bin", "3", "tflite",
                                                "model_float32.tflite")))
    self.assertIn("reused", r["again"]["stdout"])
    self.assertIn("| tflite_float32 |", r["verify"]["stdout"])
    self.assertTrue(os.path.exists(os.path.join(base, "bin", "3", "export_report.md")))
    self.assertEqual(r["not_an_export"]["code"], 2)
    self.assertIn("export_manifest.json not found", r["not_an_export"]["stderr"])
    # export_model's bad input (exit 2, one line): tests/test_user_errors.py.
    self.assertEqual(os.listdir(os.path.join(base, "bin")), ["3"])


class QATTest(absltest.TestCase):

  def test_qat_int8(self):
    tmp = tempfile.mkdtemp()
    workdir, _ = shared_runs.trained_copy(tmp)
    report = exporter.export(workdir, os.path.join(tmp, "serving"), "digits",
                             formats=["tflite_qat_int8"])
    (r,) = [x for x in report["results"] if x["format"] == "tflite_qat_int8"]
    # Post-training int8 of the same model on the same parity images: the
    # shared export's (tests/helpers/shared_runs.py), not a conversion of its own.
    (ptq,) = [x for x in shared_runs.exported()["report"]["results"]
              if x["format"] == "tflite_int8"]
    self.assertEqual(ptq["examples"], r["examples"])
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
