"""LiteRT (TFLite) conversion, all formats through one function, and checks.

`convert_saved_model(path, fmt, representative)` is the only place that holds
converter settings: the exporter converts every format (the QAT model too)
from a SavedModel's batch-1 `litert` signature (export/saved_model.py), and
`convert(model, fmt, representative)` does the same for any Keras model (it
writes a SavedModel with that signature first), so per-layer latency models
and the exported files are converted alike.

Every file takes one preprocessed image [1, S, S, C] (float32; int8 with the
file's quantisation for the full-int8 formats) and returns the class
probabilities [1, classes] (softmax inside the file). `evaluate` runs a file
with ai_edge_litert on held-out images and compares it with the Keras model.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

from aps_tf import fileio
from aps_tf import schema
from export import saved_model as saved_model_lib

FORMATS = schema.TFLITE_FORMATS
FILENAMES = {f: f.replace("tflite_", "model_") + ".tflite" for f in FORMATS}
# Formats whose files take and return int8 (calibrated on representative data).
INT8_IO = ("tflite_int8", "tflite_qat_int8")

Representative = Callable[[], Iterable[list[np.ndarray]]]


def convert_saved_model(path: str, fmt: str, representative: Representative | None = None,
                        signature: str = saved_model_lib.LITERT_SIGNATURE) -> bytes:
  """Converts SIGNATURE of the SavedModel at PATH to LiteRT format FMT.

  'tflite_qat_int8' expects a SavedModel of a fake-quantised (tfmot) model: its
  ranges come from the fake-quant nodes; the settings are those of full int8.

  Args:
    path: the SavedModel directory.
    fmt: one of `FORMATS`.
    representative: calibration images for 'tflite_int8'.
    signature: the batch-1 signature to convert.

  Returns:
    The .tflite file's bytes.
  """
  if fmt not in FORMATS:
    raise ValueError(f"unknown TFLite format {fmt!r}; expected one of {FORMATS}")
  converter = tf.lite.TFLiteConverter.from_saved_model(path, signature_keys=[signature])
  if fmt in ("tflite_float16", "tflite_dynamic") + INT8_IO:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if fmt == "tflite_float16":
    converter.target_spec.supported_types = [tf.float16]
  if fmt in INT8_IO:
    if representative is None:
      raise ValueError(f"{fmt} needs representative data")
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
  return converter.convert()


def convert(model: keras.Model, fmt: str, representative: Representative | None = None) -> bytes:
  """Converts a Keras 3 model to LiteRT `fmt` with the export's settings.

  (A SavedModel round trip, not from_concrete_functions: the latter does not
  freeze Keras 3 variables, and the file would read uninitialised variables.)
  Not 'tflite_qat_int8': that needs the fake-quantised model (export/qat.py).

  Args:
    model: the Keras model.
    fmt: a format of `FORMATS` other than 'tflite_qat_int8'.
    representative: calibration images for 'tflite_int8'.

  Returns:
    The .tflite file's bytes.
  """
  if fmt not in FORMATS or fmt == "tflite_qat_int8":
    raise ValueError(f"unknown TFLite format {fmt!r} for a Keras model; expected one of "
                     f"{FORMATS[:-1]}")
  with fileio.staging_dir(prefix="aps-tflite-") as tmpdir:
    path = os.path.join(tmpdir, "saved_model")
    archive = keras.export.ExportArchive()
    archive.track(model)
    saved_model_lib.add_litert_endpoint(archive, model)
    archive.write_out(path, verbose=False)
    return convert_saved_model(path, fmt, representative)


def representative_dataset(images: np.ndarray) -> Representative:
  """The converter's calibration generator.

  Args:
    images: preprocessed float32 images `[N, S, S, C]`.

  Returns:
    A callable yielding one single-image batch at a time.
  """
  def gen():
    for i in range(len(images)):
      yield [images[i:i + 1].astype(np.float32)]
  return gen


class LiteRTModel:
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
    """Sets one image as the input, quantised when the file takes int8.

    Args:
      image: `[1, S, S, C]` float32.
    """
    x = image[None].astype(np.float32)
    if self.inp["dtype"] != np.float32:
      scale, zero = self.inp["quantization"]
      info = np.iinfo(self.inp["dtype"])
      x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(self.inp["dtype"])
    self.interpreter.set_tensor(self.inp["index"], x)

  def get_output(self) -> np.ndarray:
    """The output of the last invoke, dequantised.

    Returns:
      `[1, K]` float32 probabilities.
    """
    y = self.interpreter.get_tensor(self.out["index"])[0]
    if self.out["dtype"] != np.float32:
      scale, zero = self.out["quantization"]
      y = (y.astype(np.float32) - zero) * scale
    return y.astype(np.float32)

  def predict(self, images: np.ndarray) -> np.ndarray:
    """Runs the file on images one at a time.

    Args:
      images: `[N, S, S, C]` float32.

    Returns:
      `[N, K]` float32 probabilities.
    """
    outs = []
    for image in images:
      self.set_input(image)
      self.interpreter.invoke()
      outs.append(self.get_output())
    return np.stack(outs)

  def latency_ms(self, image: np.ndarray, runs: int = 50, warmup: int = 5) -> float:
    """Median wall time of one single-image invoke.

    Args:
      image: `[1, S, S, C]` float32.
      runs: timed invokes.
      warmup: untimed invokes first.

    Returns:
      Milliseconds.
    """
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
  """Agreement of a file's probabilities with the Keras model's.

  Args:
    probs: the file's `[N, classes]` probabilities.
    reference: the Keras model's.
    labels: the true classes.

  Returns:
    {"top1_agreement", "max_abs_diff", "accuracy"}.
  """
  top = probs.argmax(-1)
  return {
      "top1_agreement": float(np.mean(top == reference.argmax(-1))),
      "max_abs_diff": float(np.max(np.abs(probs - reference))),
      "accuracy": float(np.mean(top == labels)),
      "examples": int(len(labels)),
  }


def evaluate(content: bytes, images: np.ndarray, reference: np.ndarray, labels: np.ndarray,
             latency_runs: int = 50) -> dict:
  """Parity of a TFLite file against the Keras probabilities, and CPU latency.

  Args:
    content: the .tflite bytes.
    images: preprocessed float32 images.
    reference: the Keras model's probabilities on them.
    labels: their classes.
    latency_runs: timed single-image invocations.

  Returns:
    `compare`'s fields plus the median latency and the file size.
  """
  runner = LiteRTModel(content)
  out = compare(runner.predict(images), reference, labels)
  out["latency_ms"] = runner.latency_ms(images[0], latency_runs)
  out["size_bytes"] = len(content)
  out["input_dtype"] = np.dtype(runner.input_dtype).name
  return out
