"""TFLite conversion (float32, float16, dynamic-range, full int8) and checks.

Every file takes one preprocessed image [1, S, S, C] (float32; int8 with the
file's quantisation for the full-int8 formats) and returns the class
probabilities [1, classes] (softmax inside the file). `evaluate` runs a file
with ai_edge_litert on held-out images and compares it with the Keras model.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

FORMATS = ("tflite_float32", "tflite_float16", "tflite_dynamic", "tflite_int8",
           "tflite_qat_int8")
FILENAMES = {f: f.replace("tflite_", "model_") + ".tflite" for f in FORMATS}


def _converter(model: keras.Model, tmpdir: str) -> tf.lite.TFLiteConverter:
  """Converter from a batch-1 probabilities SavedModel of `model`.

  (from_concrete_functions does not freeze Keras 3 variables: the file then
  reads uninitialised resource variables; a SavedModel round trip does.)
  """
  shape = (1,) + tuple(model.input_shape[1:])
  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint(
      "serving_default",
      lambda images: {"probabilities": tf.nn.softmax(model(images, training=False), axis=-1)},
      input_signature=[tf.TensorSpec(shape, tf.float32, name="images")])
  path = os.path.join(tmpdir, "probabilities_saved_model")
  archive.write_out(path, verbose=False)
  return tf.lite.TFLiteConverter.from_saved_model(path)


def convert(model: keras.Model, fmt: str,
            representative: Callable[[], Iterable[list[np.ndarray]]] | None = None) -> bytes:
  """Converts the Keras model to TFLite `fmt` (not 'tflite_qat_int8': see qat.py)."""
  if fmt not in FORMATS[:-1]:
    raise ValueError(f"unknown TFLite format {fmt!r}; expected one of {FORMATS[:-1]}")
  with tempfile.TemporaryDirectory(prefix="aps-tflite-") as tmpdir:
    converter = _converter(model, tmpdir)
    _configure(converter, fmt, representative)
    return converter.convert()


def _configure(converter, fmt, representative):
  if fmt == "tflite_float32":
    pass
  elif fmt == "tflite_float16":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  elif fmt == "tflite_dynamic":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  elif fmt == "tflite_int8":
    if representative is None:
      raise ValueError("tflite_int8 needs representative data")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8


def representative_dataset(images: np.ndarray) -> Callable[[], Iterable[list[np.ndarray]]]:
  """Preprocessed float32 images [N, S, S, C] -> converter calibration generator."""
  def gen():
    for i in range(len(images)):
      yield [images[i:i + 1].astype(np.float32)]
  return gen


class Runner:
  """One TFLite file under ai_edge_litert, single-image invoke with (de)quantisation."""

  def __init__(self, content: bytes, num_threads: int = 1):
    from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
    self.interpreter = Interpreter(model_content=content, num_threads=num_threads)
    self.interpreter.allocate_tensors()
    self.inp = self.interpreter.get_input_details()[0]
    self.out = self.interpreter.get_output_details()[0]

  @property
  def input_dtype(self):
    return self.inp["dtype"]

  def set_input(self, image: np.ndarray) -> None:
    x = image[None].astype(np.float32)
    if self.inp["dtype"] != np.float32:
      scale, zero = self.inp["quantization"]
      info = np.iinfo(self.inp["dtype"])
      x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self.inp["dtype"])
    self.interpreter.set_tensor(self.inp["index"], x)

  def get_output(self) -> np.ndarray:
    y = self.interpreter.get_tensor(self.out["index"])[0]
    if self.out["dtype"] != np.float32:
      scale, zero = self.out["quantization"]
      y = (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)

  def predict(self, images: np.ndarray) -> np.ndarray:
    outs = []
    for image in images:
      self.set_input(image)
      self.interpreter.invoke()
      outs.append(self.get_output())
    return np.stack(outs)

  def latency_ms(self, image: np.ndarray, runs: int = 50, warmup: int = 5) -> float:
    """Median wall time of one single-image invoke, in milliseconds."""
    self.set_input(image)
    for _ in range(warmup):
      self.interpreter.invoke()
    times = []
    for _ in range(max(1, runs)):
      t = time.perf_counter()
      self.interpreter.invoke()
      times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def compare(probs: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> dict:
  top = probs.argmax(-1)
  return {
      "top1_agreement": float(np.mean(top == reference.argmax(-1))),
      "max_abs_diff": float(np.max(np.abs(probs - reference))),
      "accuracy": float(np.mean(top == labels)),
      "examples": int(len(labels)),
  }


def evaluate(content: bytes, images: np.ndarray, reference: np.ndarray, labels: np.ndarray,
             latency_runs: int = 50) -> dict:
  """Parity of a TFLite file against the Keras probabilities + CPU latency."""
  runner = Runner(content)
  out = compare(runner.predict(images), reference, labels)
  out["latency_ms"] = runner.latency_ms(images[0], latency_runs)
  out["size_bytes"] = len(content)
  out["input_dtype"] = np.dtype(runner.input_dtype).name
  return out
