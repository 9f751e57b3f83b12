"""Clients for a model exported by export.export_model and served by TF-Serving.

REST (port 8501):  POST /v1/models/NAME[/versions/V]:predict
  body  {"signature_name": "serving_default", "instances": [[[[p], ...]]]}
  reply {"predictions": [{"probabilities": [...], "classes": k}, ...]}
gRPC (port 8500):  PredictionService/Predict with a PredictRequest whose
  inputs["images"] is a uint8 TensorProto [N, H, W, C].

  python -m export.serving_client --model_name=aps_digits --rest=localhost:8501 \
      --workdir=/tmp/quick_train     # sends 8 'test' images, prints classes
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np

INPUT_KEY = "images"


def rest_url(host: str, model_name: str, version: int | None = None) -> str:
  host = host if host.startswith("http") else "http://" + host
  v = f"/versions/{int(version)}" if version is not None else ""
  return f"{host.rstrip('/')}/v1/models/{model_name}{v}:predict"


def rest_body(images: np.ndarray, signature_name: str = "serving_default") -> dict:
  """The JSON body (row format): one instance per image, nested lists of ints/floats."""
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
  return {"signature_name": signature_name, "instances": images.tolist()}


def rest_predict(host: str, model_name: str, images: np.ndarray, *,
                 signature_name: str = "serving_default", version: int | None = None,
                 timeout: float = 30.0) -> dict[str, np.ndarray]:
  """POSTs the images; returns {'probabilities': [N, K] float32, 'classes': [N] int64}."""
  body = json.dumps(rest_body(images, signature_name)).encode()
  req = urllib.request.Request(rest_url(host, model_name, version), data=body,
                               headers={"Content-Type": "application/json"}, method="POST")
  try:
    with urllib.request.urlopen(req, timeout=timeout) as resp:
      reply = json.loads(resp.read())
  except urllib.error.HTTPError as e:
    raise RuntimeError(f"TF-Serving REST error {e.code}: {e.read().decode(errors='replace')}") from e
  return parse_rest_reply(reply)


def parse_rest_reply(reply: dict) -> dict[str, np.ndarray]:
  if "error" in reply:
    raise RuntimeError(f"TF-Serving error: {reply['error']}")
  preds = reply["predictions"]
  return {"probabilities": np.asarray([p["probabilities"] for p in preds], np.float32),
          "classes": np.asarray([p["classes"] for p in preds], np.int64)}


def grpc_request(model_name: str, images: np.ndarray, *, signature_name: str = "serving_default",
                 version: int | None = None):
  """PredictRequest carrying the images as a TensorProto (uint8 unless given floats)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
  images = np.asarray(images)
  if images.ndim != 4:
    raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature_name
  if version is not None:
    request.model_spec.version.value = int(version)
  request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto(images))
  return request


def parse_grpc_response(response) -> dict[str, np.ndarray]:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def grpc_predict(target: str, model_name: str, images: np.ndarray, *,
                 signature_name: str = "serving_default", version: int | None = None,
                 timeout: float = 30.0) -> dict[str, np.ndarray]:
  """Calls PredictionService/Predict at target ('host:8500')."""
  import grpc  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  request = grpc_request(model_name, images, signature_name=signature_name, version=version)
  with grpc.insecure_channel(target) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return parse_grpc_response(stub.Predict(request, timeout=timeout))


def main(argv=None):
  import argparse  # pylint: disable=g-import-not-at-top
  p = argparse.ArgumentParser(description="Send 'test' images to a TF-Serving model.")
  p.add_argument("--model_name", required=True)
  p.add_argument("--rest", help="host:port of the REST API (8501)")
  p.add_argument("--grpc", help="host:port of the gRPC API (8500)")
  p.add_argument("--workdir", required=True, help="retraining workdir (config.json: dataset)")
  p.add_argument("--count", type=int, default=8)
  args = p.parse_args(argv)
  import ml_collections  # pylint: disable=g-import-not-at-top
  from aps_tf import data  # pylint: disable=g-import-not-at-top
  with open(f"{args.workdir}/config.json") as f:
    cfg = ml_collections.ConfigDict(json.load(f))
  images = data.raw_images(cfg.data, "test", args.count)
  if args.rest:
    print("REST classes:", rest_predict(args.rest, args.model_name, images)["classes"])
  if args.grpc:
    print("gRPC classes:", grpc_predict(args.grpc, args.model_name, images)["classes"])


if __name__ == "__main__":
  main()
