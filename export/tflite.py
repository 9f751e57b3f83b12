"""LiteRT files of an export: the shared conversion, parity and latency checks.

Conversion lives in `aps_tf.litert` (shared with the latency tables, so
both convert alike); this module names the exported files and checks them:
`evaluate` runs a file with ai_edge_litert on held-out images and compares
it with the Keras model. Every file takes one preprocessed image
[1, S, S, C] (float32; int8 with the file's quantisation for the full-int8
formats) and returns the class probabilities [1, classes]; the
preprocessing is written into each file as LiteRT metadata
(export/litert_metadata.py).
"""

from __future__ import annotations

import numpy as np

from aps_tf import litert

FORMATS = litert.FORMATS
INT8_IO = litert.INT8_IO
FILENAMES = {f: f.replace("tflite_", "model_") + ".tflite" for f in FORMATS}
Representative = litert.Representative
convert_saved_model = litert.convert_saved_model
convert = litert.convert
representative_dataset = litert.representative_dataset
LiteRTModel = litert.LiteRTModel


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
