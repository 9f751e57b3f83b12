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

import io
import json
import os
import urllib.error
import urllib.request

import numpy as np

from aps_tf import errors

INPUT_KEY = "images"


def rest_url(host: str, model_name: str, version: int | None = None) -> str:
  """The REST predict URL of a served model.

  Args:
    host: 'host:8501'.
    model_name: the served name.
    version: a version, or None for the latest.

  Returns:
    The URL.
  """
  host = host if host.startswith("http") else "http://" + host
  v = f"/versions/{int(version)}" if version is not None else ""
  return f"{host.rstrip('/')}/v1/models/{model_name}{v}:predict"


def rest_body(images: np.ndarray, signature_name: str = "serving_default") -> dict:
  """The JSON body (row format): one instance per image, nested lists of ints/floats.

  Args:
    images: `[N, H, W, C]`.
    signature_name: the signature to call.

  Returns:
    The request body.
  """
  images = np.asarray(images)
  if images.ndim != 4:
    raise ServingInputError(f"images must be [N, H, W, C], got shape {images.shape}")
  return {"signature_name": signature_name, "instances": images.tolist()}


def rest_predict(host: str, model_name: str, images: np.ndarray, *,
                 signature_name: str = "serving_default", version: int | None = None,
                 timeout: float = 30.0) -> dict[str, np.ndarray]:
  """POSTs the images to a model server's REST API.

  Args:
    host: 'host:8501'.
    model_name: the served name.
    images: `[N, H, W, C]` uint8 (or preprocessed float32 for that signature).
    signature_name: the signature to call.
    version: a version, or None for the latest.
    timeout: seconds.

  Returns:
    {'probabilities': [N, K] float32, 'classes': [N] int64}.
  """
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
  """The outputs of a REST predict reply.

  Args:
    reply: the decoded JSON.

  Returns:
    {'probabilities', 'classes'} as arrays.
  """
  if "error" in reply:
    raise RuntimeError(f"TF-Serving error: {reply['error']}")
  preds = reply["predictions"]
  return {"probabilities": np.asarray([p["probabilities"] for p in preds], np.float32),
          "classes": np.asarray([p["classes"] for p in preds], np.int64)}


def grpc_request(model_name: str, images: np.ndarray, *, signature_name: str = "serving_default",
                 version: int | None = None):
  """PredictRequest carrying the images as a TensorProto (uint8 unless given floats).

  Args:
    model_name: the served name.
    images: `[N, H, W, C]`.
    signature_name: the signature to call.
    version: a version, or None for the latest.

  Returns:
    The `PredictRequest`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
  images = np.asarray(images)
  if images.ndim != 4:
    raise ServingInputError(f"images must be [N, H, W, C], got shape {images.shape}")
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature_name
  if version is not None:
    request.model_spec.version.value = int(version)
  request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto(images))
  return request


def parse_grpc_response(response) -> dict[str, np.ndarray]:
  """The outputs of a PredictResponse.

  Args:
    response: the response proto.

  Returns:
    {'probabilities', 'classes'} as arrays.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


def grpc_predict(target: str, model_name: str, images: np.ndarray, *,
                 signature_name: str = "serving_default", version: int | None = None,
                 timeout: float = 30.0) -> dict[str, np.ndarray]:
  """Calls PredictionService/Predict.

  Args:
    target: 'host:8500'.
    model_name: the served name.
    images: `[N, H, W, C]`.
    signature_name: the signature to call.
    version: a version, or None for the latest.
    timeout: seconds.

  Returns:
    {'probabilities', 'classes'} as arrays.
  """
  import grpc  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_service_pb2_grpc  # pylint: disable=g-import-not-at-top
  request = grpc_request(model_name, images, signature_name=signature_name, version=version)
  with grpc.insecure_channel(target) as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return parse_grpc_response(stub.Predict(request, timeout=timeout))


class ServingInputError(errors.UserError, ValueError):
  """Images the served model cannot take (dtype, rank, size, not an image)."""


def load_images(path: str) -> np.ndarray:
  """Images from a .npy array (no pickles) or an encoded image file, on any filesystem.

  Args:
    path: a .npy file or a PNG/JPEG/... image.

  Returns:
    `[N, H, W, C]` images.

  Raises:
    ValueError: the file is neither.
  """
  from aps_tf import fileio  # pylint: disable=g-import-not-at-top
  try:
    content = fileio.read_bytes(path)
    if path.endswith(".npy"):
      return np.load(io.BytesIO(content), allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ServingInputError(f"--images={path}: cannot read an array: {e}") from e
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    image = tf.io.decode_image(content, expand_animations=False).numpy()
  except (tf.errors.InvalidArgumentError, ValueError) as e:
    raise ServingInputError(f"--images={path}: not a PNG, JPEG, GIF or BMP image") from e
  return image[None]


def check_images(images: np.ndarray, image_shape, source: str = "images") -> np.ndarray:
  """Refuses what the serving signature would refuse, naming expected vs got.

  Args:
    images: the images to send.
    image_shape: the (H, W, C) the signature takes (None entries: any).
    source: where they came from, for the message.

  Returns:
    `images` as a batch.

  Raises:
    ValueError: wrong rank, shape or dtype.
  """
  images = np.asarray(images)
  want = f"uint8 [N, {', '.join(str(d) for d in image_shape)}]"
  got = f"{images.dtype} {list(images.shape)}"
  if images.dtype != np.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != tuple(
      image_shape) or images.shape[0] < 1:
    raise ServingInputError(f"{source}: expected {want}, got {got}")
  return images


def _define_flags() -> None:
  """Flags of `python -m export.serving_client` (only when run as the binary)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("model_name", None, "Served model name.")
  flags.DEFINE_string("rest", None, "host:port of the REST API (8501).")
  flags.DEFINE_string("grpc", None, "host:port of the gRPC API (8500).")
  flags.DEFINE_string("workdir", None, "Retraining workdir (config.json: dataset).")
  flags.DEFINE_integer("count", 8, "How many 'test' images to send.")
  flags.DEFINE_string("images", None, "Send these instead: a uint8 .npy [N, H, W, C] or an "
                      "image file.")
  flags.mark_flags_as_required(["model_name", "workdir"])


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  if not (args.rest or args.grpc):
    raise app.UsageError("give --rest=HOST:PORT and/or --grpc=HOST:PORT")
  import ml_collections  # pylint: disable=g-import-not-at-top
  from aps_tf import data  # pylint: disable=g-import-not-at-top
  path = os.path.join(args.workdir, "config.json")
  from aps_tf import fileio  # pylint: disable=g-import-not-at-top
  try:
    cfg = ml_collections.ConfigDict(fileio.read_json(path))
  except (OSError, ValueError) as e:
    raise errors.UserError(f"{path}: cannot read the run's config: {e}") from e
  info = data.dataset_info(cfg.data)
  if args.images:
    images = check_images(load_images(args.images), info.image_shape, f"--images={args.images}")
  else:
    if args.count < 1:
      raise app.UsageError(f"--count: expected a positive integer, got {args.count}")
    images = data.raw_images(cfg.data, "test", args.count)
  if args.rest:
    try:
      print("REST classes:", rest_predict(args.rest, args.model_name, images)["classes"])
    except (urllib.error.URLError, ConnectionError) as e:
      raise errors.UserError(f"--rest={args.rest}: cannot reach the model server: "
                             f"{getattr(e, 'reason', e)}") from e
  if args.grpc:
    print("gRPC classes:", grpc_predict(args.grpc, args.model_name, images)["classes"])
  return 0


if __name__ == "__main__":
  from aps_tf import cli  # pylint: disable=g-import-not-at-top
  _define_flags()
  cli.run(main)
