"""SavedModel for TF-Serving: signatures, shape checks and warm-up records.

Signatures (the first two return `probabilities` float32 [N, classes] and
`classes` int64 [N]):
  serving_default       images: uint8 [N, H, W, C] raw images; the dataset's
                        eval preprocessing (aps_tf.data.serving_preprocess)
                        runs inside the graph.
  predict_preprocessed  images: float32 [N, S, S, C] already preprocessed.
  litert                images: float32 [1, S, S, C] preprocessed -> only
                        `probabilities`; every LiteRT file is converted from
                        this signature (export/tflite.py), so the SavedModel is
                        the one source of all formats.
A wrong dtype is refused by the signature itself; a wrong image shape fails
an in-graph check whose message names the expected shape.
"""

from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

from aps_tf import data
from aps_tf import fileio

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
SIGNATURES = ("serving_default", "predict_preprocessed", "litert")
LITERT_SIGNATURE = "litert"
INPUT_KEY = "images"


def raw_input_shape(data_cfg) -> tuple:
  """The image shape the `serving_default` signature takes.

  Args:
    data_cfg: the `data` section.

  Returns:
    (H, W, C) of the uint8 images; None entries mean any size.
  """
  info = data.dataset_info(data_cfg)
  if data_cfg.name == "imagenet2012":
    return (None, None, info.image_shape[-1])
  return tuple(info.image_shape)


def _check_shape(images, expected, signature):
  """In-graph check that images is [N, *expected] (None = any)."""
  # The signature's static shape makes assert_rank / tf.rank constants, but a
  # loaded signature accepts any rank at run time: count the run-time shape.
  runtime_rank = tf.reduce_sum(tf.cast(tf.shape(images) >= 0, tf.int32))
  rank = tf.debugging.assert_equal(runtime_rank, 4, message=(
      f"{signature}: '{INPUT_KEY}' must be a batch of images [N, H, W, C]"))
  with tf.control_dependencies([rank]):
    shape = tf.identity(tf.shape(images))
  checks = [rank]
  for axis, dim in enumerate(expected, start=1):
    if dim is not None:
      checks.append(tf.debugging.assert_equal(shape[axis], dim, message=(
          f"{signature}: '{INPUT_KEY}' must have shape [N, "
          f"{', '.join('?' if d is None else str(d) for d in expected)}]; dimension {axis} "
          f"differs")))
  with tf.control_dependencies(checks):
    return tf.identity(images)


def _outputs(logits):
  probs = tf.nn.softmax(logits, axis=-1)
  return {"probabilities": probs, "classes": tf.argmax(probs, axis=-1)}


def add_litert_endpoint(archive: keras.export.ExportArchive, model: keras.Model) -> None:
  """Adds the batch-1 `litert` signature (preprocessed image -> probabilities).

  Fixed batch 1 and no shape-check ops: what an on-device interpreter runs.

  Args:
    archive: the export archive being built.
    model: the Keras child.
  """
  shape = (1,) + tuple(model.input_shape[1:])
  archive.add_endpoint(
      LITERT_SIGNATURE,
      lambda images: {"probabilities": tf.nn.softmax(model(images, training=False), axis=-1)},
      input_signature=[tf.TensorSpec(shape, tf.float32, name=INPUT_KEY)])


def export(model: keras.Model, data_cfg, path: str, model_name: str,
           warmup_images: np.ndarray | None = None) -> dict:
  """Writes the SavedModel to `path` (which must not exist).

  Args:
    model: the float32 Keras child.
    data_cfg: the `data` section (the serving preprocessing).
    path: the SavedModel directory.
    model_name: the served name (warm-up records).
    warmup_images: raw images for TF-Serving's warm-up file, or None.

  Returns:
    The signatures' input and output descriptions.
  """
  raw_shape = raw_input_shape(data_cfg)
  pre_shape = tuple(model.input_shape[1:])
  archive = keras.export.ExportArchive()
  archive.track(model)

  def serving_default(images):
    images = _check_shape(images, raw_shape, "serving_default")
    return _outputs(model(data.serving_preprocess(data_cfg, images), training=False))

  def predict_preprocessed(images):
    images = _check_shape(images, pre_shape, "predict_preprocessed")
    return _outputs(model(images, training=False))

  archive.add_endpoint("serving_default", serving_default, input_signature=[
      tf.TensorSpec((None,) + raw_shape, tf.uint8, name=INPUT_KEY)])
  archive.add_endpoint("predict_preprocessed", predict_preprocessed, input_signature=[
      tf.TensorSpec((None,) + pre_shape, tf.float32, name=INPUT_KEY)])
  add_litert_endpoint(archive, model)
  archive.write_out(path, verbose=False)
  if warmup_images is not None:
    write_warmup(path, model_name, warmup_images)
  return {"serving_default": {"inputs": {INPUT_KEY: ["uint8", [None, *raw_shape]]}},
          "predict_preprocessed": {"inputs": {INPUT_KEY: ["float32", [None, *pre_shape]]}},
          LITERT_SIGNATURE: {"inputs": {INPUT_KEY: ["float32", [1, *pre_shape]]},
                             "outputs": {"probabilities": "float32"}},
          "outputs": {"probabilities": "float32", "classes": "int64"}}


def write_warmup(path: str, model_name: str, images: np.ndarray, batch_sizes=(1, 8)) -> int:
  """TF-Serving warm-up records (PredictionLog) in assets.extra/.

  Args:
    path: the SavedModel directory.
    model_name: the served name.
    images: raw uint8 images.
    batch_sizes: one request per batch size.

  Returns:
    How many records were written.
  """
  from tensorflow_serving.apis import model_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import predict_pb2  # pylint: disable=g-import-not-at-top
  from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=g-import-not-at-top
  out = os.path.join(path, WARMUP_FILE)
  fileio.makedirs(os.path.dirname(out))
  n = 0
  with tf.io.TFRecordWriter(out) as writer:
    for b in batch_sizes:
      batch = np.asarray(images[:b], np.uint8)
      request = predict_pb2.PredictRequest(
          model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default"))
      request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto(batch))
      log = prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request))
      writer.write(log.SerializeToString())
      n += 1
  return n


def read_warmup(path: str) -> list:
  """The warm-up records of a SavedModel (tests and checks).

  Args:
    path: the SavedModel directory.

  Returns:
    The `PredictionLog` protos.
  """
  from tensorflow_serving.apis import prediction_log_pb2  # pylint: disable=g-import-not-at-top
  logs = []
  for record in tf.data.TFRecordDataset(os.path.join(path, WARMUP_FILE)):
    logs.append(prediction_log_pb2.PredictionLog.FromString(record.numpy()))
  return logs
