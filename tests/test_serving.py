"""Tests of export/serving_client.py: what a REST / gRPC request carries, fed
to the SavedModel in a fresh process, gives the Keras outputs; plus a live
tensorflow_model_server test, opt-in: no package registry this project installs
from ships the server binary (it comes from the tensorflow/serving docker image
or Google's own apt repository). Run it with the binary on PATH:

  APS_TF_LIVE_SERVING=1 python -m pytest tests/test_serving.py -m live_serving

Without APS_TF_LIVE_SERVING=1 it is deselected (tests/conftest.py says so in the
run's summary); with it and no binary, it fails."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
from google.protobuf import text_format
import keras
import numpy as np
import pytest
import tensorflow as tf

from aps_tf import data
from export import exporter
from export import serving_client
from tests.helpers import shared_runs
from tests.helpers import train_util as util

# Runs in a fresh process: decode the request payloads as TF-Serving does and
# call the SavedModel signature.
_SERVE_SCRIPT = r"""
import json, sys
import numpy as np, tensorflow as tf
from tensorflow_serving.apis import predict_pb2
path, rest_file, grpc_file, out_file = sys.argv[1:]
sig = tf.saved_model.load(path).signatures
with open(rest_file) as f:
  body = json.load(f)
spec = sig[body["signature_name"]].structured_input_signature[1]["images"]
rest_images = np.asarray(body["instances"], spec.dtype.as_numpy_dtype)
with open(grpc_file, "rb") as f:
  req = predict_pb2.PredictRequest.FromString(f.read())
grpc_images = tf.make_ndarray(req.inputs["images"])
out = {}
for name, images, signature in (("rest", rest_images, body["signature_name"]),
                                ("grpc", grpc_images, req.model_spec.signature_name)):
  r = sig[signature](images=tf.constant(images))
  out[name] = {k: v.numpy().tolist() for k, v in r.items()}
  out[name]["dtype"] = str(images.dtype)
with open(out_file, "w") as f:
  json.dump(out, f)
"""


def _expected(cfg, workdir, images):
  model = keras.models.load_model(os.path.join(workdir, "model.keras"))
  return tf.nn.softmax(
      model(data.serving_preprocess(cfg.data, images), training=False)).numpy()


class PayloadTest(absltest.TestCase):
  """What the client sends and how it reads a reply (no model needed)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.images = data.raw_images(util.tiny_config().data, "test", 6)

  def test_rest_body(self):
    body = serving_client.rest_body(self.images)
    self.assertEqual(body["signature_name"], "serving_default")
    self.assertLen(body["instances"], 6)
    np.testing.assert_array_equal(np.asarray(body["instances"], np.uint8), self.images)
    json.dumps(body)  # serialisable
    self.assertEqual(serving_client.rest_url("localhost:8501", "digits", 2),
                     "http://localhost:8501/v1/models/digits/versions/2:predict")
    with self.assertRaisesRegex(ValueError, r"\[N, H, W, C\]"):
      serving_client.rest_body(self.images[0])

  def test_grpc_request(self):
    req = serving_client.grpc_request("digits", self.images, version=1)
    self.assertEqual(req.model_spec.name, "digits")
    self.assertEqual(req.model_spec.version.value, 1)
    decoded = tf.make_ndarray(req.inputs["images"])
    self.assertEqual(decoded.dtype, np.uint8)
    np.testing.assert_array_equal(decoded, self.images)

  def test_parse_rest_reply(self):
    want = tf.nn.softmax(np.random.default_rng(0).normal(size=(6, 10))).numpy()
    reply = {"predictions": [{"probabilities": p.tolist(), "classes": int(p.argmax())}
                             for p in want]}
    got = serving_client.parse_rest_reply(reply)
    np.testing.assert_allclose(got["probabilities"], want, atol=1e-6)
    np.testing.assert_array_equal(got["classes"], want.argmax(-1))
    with self.assertRaisesRegex(RuntimeError, "bad input"):
      serving_client.parse_rest_reply({"error": "bad input"})


@pytest.mark.slow
class ServingClientTest(absltest.TestCase):
  """The payloads through the session's shared export, in a fresh process."""

  def test_payloads_through_saved_model_in_fresh_process(self):
    tmp = tempfile.mkdtemp()
    shared = shared_runs.exported()  # read-only
    _, cfg = shared_runs.trained()
    images = data.raw_images(cfg.data, "test", 6)
    want = _expected(cfg, shared["workdir"], images)
    rest_file = os.path.join(tmp, "rest.json")
    grpc_file = os.path.join(tmp, "grpc.pb")
    out_file = os.path.join(tmp, "out.json")
    with open(rest_file, "w") as f:
      json.dump(serving_client.rest_body(images), f)
    with open(grpc_file, "wb") as f:
      f.write(serving_client.grpc_request("digits", images).SerializeToString())
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    r = subprocess.run([sys.executable, "-c", _SERVE_SCRIPT, shared["version_dir"], rest_file,
                        grpc_file, out_file], capture_output=True, text=True, env=env,
                       timeout=300)
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    with open(out_file) as f:
      out = json.load(f)
    for name in ("rest", "grpc"):
      self.assertEqual(out[name]["dtype"], "uint8")
      np.testing.assert_allclose(out[name]["probabilities"], want, atol=1e-5)
      np.testing.assert_array_equal(out[name]["classes"], want.argmax(-1))


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.live_serving
class LiveServerTest(absltest.TestCase):
  """Opt-in (APS_TF_LIVE_SERVING=1, see the module docstring): fails without the binary."""

  def test_rest_and_grpc(self):
    binary = shutil.which("tensorflow_model_server")
    self.assertIsNotNone(binary, "APS_TF_LIVE_SERVING is set but tensorflow_model_server is "
                         "not on PATH (install TF-Serving or use the tensorflow/serving image)")
    tmp = tempfile.mkdtemp()
    shared = shared_runs.exported()  # read-only; the server only reads it
    _, cfg = shared_runs.trained()
    config_file = os.path.join(tmp, "models.config")
    with open(config_file, "w") as f:  # base_path: the export itself, not /models
      f.write(text_format.MessageToString(
          exporter.models_config(["digits"], serving_root=shared["base"])))
    rest, grpc_port = _free_port(), _free_port()
    server = subprocess.Popen(
        [binary, f"--port={grpc_port}", f"--rest_api_port={rest}",
         f"--model_config_file={config_file}", "--enable_model_warmup=true"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
      images = data.raw_images(cfg.data, "test", 4)
      deadline = time.time() + 60
      while True:
        try:
          got = serving_client.rest_predict(f"localhost:{rest}", "digits", images)
          break
        except Exception:  # pylint: disable=broad-except
          if time.time() > deadline:
            raise
          time.sleep(0.5)
      want = _expected(cfg, shared["workdir"], images)
      np.testing.assert_allclose(got["probabilities"], want, atol=1e-5)
      g = serving_client.grpc_predict(f"localhost:{grpc_port}", "digits", images)
      np.testing.assert_allclose(g["probabilities"], want, atol=1e-5)
    finally:
      server.terminate()
      server.wait()


if __name__ == "__main__":
  absltest.main()
