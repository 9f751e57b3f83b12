"""Tests of export/serving_client.py: what a REST / gRPC request carries, fed
to the SavedModel in a fresh process, gives the Keras outputs; plus a live
tensorflow_model_server test when the binary is on PATH."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
import keras
import numpy as np
import tensorflow as tf

from aps_tf import data
from aps_tf.export import exporter
from aps_tf.export import serving_client
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


class ServingClientTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.workdir, cls.cfg = util.trained_workdir(cls.tmp, epochs=2)
    cls.base = os.path.join(cls.tmp, "serving")
    exporter.export(cls.workdir, cls.base, "digits", formats=["saved_model"])
    cls.version_dir = os.path.join(cls.base, "digits", "1")
    cls.images = data.raw_images(cls.cfg.data, "test", 6)
    model = keras.models.load_model(os.path.join(cls.workdir, "model.keras"))
    cls.want = tf.nn.softmax(
        model(data.serving_preprocess(cls.cfg.data, cls.images), training=False)).numpy()

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

  def test_payloads_through_saved_model_in_fresh_process(self):
    rest_file = os.path.join(self.tmp, "rest.json")
    grpc_file = os.path.join(self.tmp, "grpc.pb")
    out_file = os.path.join(self.tmp, "out.json")
    with open(rest_file, "w") as f:
      json.dump(serving_client.rest_body(self.images), f)
    with open(grpc_file, "wb") as f:
      f.write(serving_client.grpc_request("digits", self.images).SerializeToString())
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    r = subprocess.run([sys.executable, "-c", _SERVE_SCRIPT, self.version_dir, rest_file,
                        grpc_file, out_file], capture_output=True, text=True, env=env,
                       timeout=300)
    self.assertEqual(r.returncode, 0, r.stderr[-2000:])
    with open(out_file) as f:
      out = json.load(f)
    for name in ("rest", "grpc"):
      self.assertEqual(out[name]["dtype"], "uint8")
      np.testing.assert_allclose(out[name]["probabilities"], self.want, atol=1e-5)
      np.testing.assert_array_equal(out[name]["classes"], self.want.argmax(-1))

  def test_parse_rest_reply(self):
    reply = {"predictions": [{"probabilities": p.tolist(), "classes": int(p.argmax())}
                             for p in self.want]}
    got = serving_client.parse_rest_reply(reply)
    np.testing.assert_allclose(got["probabilities"], self.want, atol=1e-6)
    with self.assertRaisesRegex(RuntimeError, "bad input"):
      serving_client.parse_rest_reply({"error": "bad input"})


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@absltest.skipUnless(shutil.which("tensorflow_model_server"),
                     "tensorflow_model_server is not on PATH (install TF-Serving or use the "
                     "tensorflow/serving docker image to run this test)")
class LiveServerTest(absltest.TestCase):

  def test_rest_and_grpc(self):
    tmp = tempfile.mkdtemp()
    workdir, cfg = util.trained_workdir(tmp, epochs=1)
    base = os.path.join(tmp, "serving")
    exporter.export(workdir, base, "digits", formats=["saved_model"], serving_root=base)
    rest, grpc_port = _free_port(), _free_port()
    server = subprocess.Popen(
        ["tensorflow_model_server", f"--port={grpc_port}", f"--rest_api_port={rest}",
         f"--model_config_file={os.path.join(base, 'models.config')}",
         "--enable_model_warmup=true"],
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
      model = keras.models.load_model(os.path.join(workdir, "model.keras"))
      want = tf.nn.softmax(model(data.serving_preprocess(cfg.data, images))).numpy()
      np.testing.assert_allclose(got["probabilities"], want, atol=1e-5)
      g = serving_client.grpc_predict(f"localhost:{grpc_port}", "digits", images)
      np.testing.assert_allclose(g["probabilities"], want, atol=1e-5)
    finally:
      server.terminate()
      server.wait()


if __name__ == "__main__":
  absltest.main()
