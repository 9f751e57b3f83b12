"""Quantisation-aware training (tfmot) -> int8 TFLite, in a subprocess.

tensorflow_model_optimization works only on tf_keras (legacy Keras 2) models
and switches the process to legacy Keras when imported, so this path runs in
its own process (`python -m export.qat ...`, TF_USE_LEGACY_KERAS=1):
  1. load the Keras 3 dense child (model.keras) and rebuild it layer by layer
     as a tf_keras Functional model with a Softmax head, weights copied;
  2. tfmot.quantization.keras.quantize_model (Conv-BN folding, fake quant);
     then set every fake-quant range from the float activations on the
     representative images (calibrate_ranges: tfmot's [-6, 6] initial ranges
     barely move in a short fine-tune and cost several points of accuracy);
  3. fine-tune cfg.export.qat_epochs on 'full_train' (SGD, cfg.export.qat_lr);
  4. convert to TFLite with int8 kernels and int8 input/output.
The parent process (`run_subprocess`) stays Keras 3 and checks the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

_KNOWN = ("InputLayer", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU", "Add",
          "GlobalAveragePooling2D", "Dense", "MaxPooling2D", "Activation", "Softmax")


# Defaults of the export fields this path reads (configs/base.py), for config.json
# files written before a field existed.
EXPORT_DEFAULTS = {"qat_epochs": 1, "qat_lr": 1e-3, "qat_batch_size": 64,
                   "representative_examples": 200}


class QATError(RuntimeError):
  pass


def run_subprocess(workdir: str, out_path: str, config_overrides: dict | None = None,
                   timeout: float = 1800) -> dict:
  """Runs QAT for WORKDIR/model.keras in a fresh process; returns its summary."""
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  cmd = [sys.executable, "-m", "export.qat", f"--workdir={workdir}", f"--out={out_path}",
         f"--overrides={json.dumps(config_overrides or {})}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
  if proc.returncode != 0:
    tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
    raise QATError(f"QAT subprocess failed (exit {proc.returncode}):\n{tail}")
  summary_path = out_path + ".json"
  with open(summary_path) as f:
    summary = json.load(f)
  os.remove(summary_path)
  return summary


def to_tf_keras(model):
  """Rebuilds a Keras 3 Functional model of stock layers as tf_keras (same weights)."""
  import tf_keras  # pylint: disable=g-import-not-at-top
  L = tf_keras.layers
  made = {}

  def make(layer):
    cls = type(layer).__name__
    c = layer.get_config()
    if cls not in _KNOWN:
      raise QATError(f"layer {layer.name} ({cls}) has no tf_keras rebuild")
    if cls == "Conv2D":
      return L.Conv2D(c["filters"], c["kernel_size"], c["strides"], padding=c["padding"],
                      use_bias=c["use_bias"], groups=c.get("groups", 1), name=layer.name)
    if cls == "DepthwiseConv2D":
      return L.DepthwiseConv2D(c["kernel_size"], c["strides"], padding=c["padding"],
                               depth_multiplier=c.get("depth_multiplier", 1),
                               use_bias=c["use_bias"], name=layer.name)
    if cls == "BatchNormalization":
      return L.BatchNormalization(axis=c["axis"], momentum=c["momentum"], epsilon=c["epsilon"],
                                  center=c["center"], scale=c["scale"], name=layer.name)
    if cls == "ReLU":
      return L.ReLU(max_value=c.get("max_value"), negative_slope=c.get("negative_slope", 0.0),
                    threshold=c.get("threshold", 0.0), name=layer.name)
    if cls == "Add":
      return L.Add(name=layer.name)
    if cls == "GlobalAveragePooling2D":
      return L.GlobalAveragePooling2D(name=layer.name)
    if cls == "Dense":
      if c.get("activation", "linear") != "linear":
        raise QATError(f"Dense {layer.name}: activation {c['activation']} not supported")
      return L.Dense(c["units"], use_bias=c["use_bias"], name=layer.name)
    if cls == "MaxPooling2D":
      return L.MaxPooling2D(c["pool_size"], c["strides"], padding=c["padding"], name=layer.name)
    if cls == "Activation":
      return L.Activation(c["activation"], name=layer.name)
    if cls == "Softmax":
      return L.Softmax(name=layer.name)
    raise QATError(cls)

  def inbound(layer):
    node = layer._inbound_nodes[0]  # pylint: disable=protected-access
    return [t._keras_history[0] for t in node.input_tensors]  # pylint: disable=protected-access

  inputs = None
  for layer in model.layers:  # topological order
    if type(layer).__name__ == "InputLayer":
      shape = tuple(layer.batch_shape[1:]) if hasattr(layer, "batch_shape") else (
          tuple(model.input_shape[1:]))
      inputs = tf_keras.Input(shape=shape, name=layer.name)
      made[layer.name] = inputs
      continue
    args = [made[p.name] for p in inbound(layer)]
    made[layer.name] = make(layer)(args if len(args) > 1 else args[0])
  if inputs is None:
    raise QATError("model has no InputLayer")
  out_layer = model.layers[-1]
  rebuilt = tf_keras.Model(inputs, made[out_layer.name], name=model.name)
  for layer in model.layers:
    if layer.weights:
      rebuilt.get_layer(layer.name).set_weights(layer.get_weights())
  return rebuilt


def calibrate_ranges(qat, float_model, images, batch_size: int = 64) -> dict:
  """Sets the fake-quant ranges of QAT (a tfmot quantize_model) before fine-tuning.

  tfmot's default 8-bit scheme starts every activation range at [-6, 6] and only
  moves it by an EMA (decay 0.999, no debiasing) of per-batch min/max during
  training, so a short fine-tune (tens of steps) keeps ~[-6, 6]: ReLU outputs
  lose half the int8 codes to negatives, small tensors get a coarse step and
  large ones are clipped. Weight ranges (last value) are only set by a training
  step. Like the converter's post-training calibration, this takes each range
  from the float model's activations on IMAGES (min(.,0), max(.,0) over all of
  them) and each weight range from the weights, so fine-tuning starts from the
  post-training-int8 point. Returns {"calibrated": n, "uncalibrated": [names]}.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top

  targets = []  # (quantizer vars {'min_var', 'max_var'}, float tensor index)
  tensors = []
  uncalibrated = []

  def want(tensor):
    for i, t in enumerate(tensors):
      if t is tensor:
        return i
    tensors.append(tensor)
    return len(tensors) - 1

  for layer in qat.layers:
    kind = type(layer).__name__
    if kind == "QuantizeLayer":
      if getattr(layer, "quantizer_vars", None):
        targets.append((layer.quantizer_vars, want(float_model.input)))
      continue
    if not kind.startswith("QuantizeWrapper"):
      continue
    for weight, quantizer, qvars in layer._weight_vars:  # pylint: disable=protected-access
      if qvars:
        quantizer(tf.convert_to_tensor(weight), True, weights=qvars)  # last value: assigns
    out = float_model.get_layer(layer.layer.name).output
    if getattr(layer, "_output_quantizers", None):
      targets.append((layer._output_quantizer_vars, want(out)))  # pylint: disable=protected-access
    for act in getattr(layer, "_quantize_activations", []):  # pylint: disable=protected-access
      if getattr(act, "_post_activation_vars", None):
        targets.append((act._post_activation_vars, want(out)))  # pylint: disable=protected-access
      if getattr(act, "_pre_activation_vars", None):
        uncalibrated.append(layer.name + "/pre_activation")
  if not tensors:
    return {"calibrated": 0, "uncalibrated": uncalibrated}
  probe = tf_keras.Model(float_model.input, tensors)
  lo = [np.inf] * len(tensors)
  hi = [-np.inf] * len(tensors)
  for start in range(0, len(images), max(1, int(batch_size))):
    outs = probe(images[start:start + batch_size], training=False)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    for i, t in enumerate(outs):
      t = np.asarray(t)
      lo[i] = min(lo[i], float(t.min()))
      hi[i] = max(hi[i], float(t.max()))
  for qvars, i in targets:
    # The quantizers keep 0 inside the range (TFLite needs an exact zero point).
    qvars["min_var"].assign(tf.fill(tf.shape(qvars["min_var"]), min(lo[i], 0.0)))
    qvars["max_var"].assign(tf.fill(tf.shape(qvars["max_var"]), max(hi[i], 0.0)))
  return {"calibrated": len(targets), "uncalibrated": uncalibrated}


def _define_flags() -> None:
  """Flags of `python -m export.qat` (defined only when run as the binary: the
  export binary imports this module and has its own --workdir)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "Retraining workdir (model.keras, config.json).")
  flags.DEFINE_string("out", None, "Output .tflite path (OUT.json gets the summary).")
  flags.DEFINE_string("overrides", "{}", "JSON {export field: value}.")
  flags.mark_flags_as_required(["workdir", "out"])


def _check_inputs(workdir: str, out: str, overrides_json: str) -> tuple[dict, dict]:
  """(config.json, overrides), checked before anything is written."""
  from aps_tf import config_check  # pylint: disable=g-import-not-at-top
  from aps_tf import errors  # pylint: disable=g-import-not-at-top
  from aps_tf import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  for name in ("model.keras", "config.json"):
    if not os.path.isfile(os.path.join(workdir, name)):
      raise errors.UserError(f"{os.path.join(workdir, name)} not found: retrain first")
  try:
    overrides = json.loads(overrides_json)
  except ValueError as e:
    raise errors.UserError(f"--overrides: expected a JSON object, got {overrides_json!r}") from e
  if not isinstance(overrides, dict) or any(k not in EXPORT_DEFAULTS for k in overrides):
    raise errors.UserError(f"--overrides: expected a JSON object with keys among "
                           f"{sorted(EXPORT_DEFAULTS)}, got {overrides_json!r}")
  path = os.path.join(workdir, "config.json")
  try:
    with open(path) as f:
      cfg = json.load(f)
  except ValueError as e:
    raise errors.UserError(f"{path}: not valid JSON: {e}") from e
  import ml_collections  # pylint: disable=g-import-not-at-top
  config_check.check_export(ml_collections.ConfigDict(cfg))
  workdir_lib.ensure_writable(os.path.dirname(os.path.abspath(out)))
  return cfg, overrides


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  cfg_json, overrides = _check_inputs(args.workdir, args.out, args.overrides)
  os.environ["TF_USE_LEGACY_KERAS"] = "1"

  import keras  # Keras 3, only to read model.keras  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top

  from aps_tf import data  # pylint: disable=g-import-not-at-top

  cfg = ml_collections.ConfigDict(cfg_json)
  settings = dict(EXPORT_DEFAULTS)
  settings.update({k: v for k, v in cfg.export.items() if v is not None})
  settings.update(overrides)
  model3 = keras.models.load_model(os.path.join(args.workdir, "model.keras"), compile=False)
  base = to_tf_keras(model3)
  probs = tf_keras.layers.Softmax(name="probabilities")(base.output)
  float_model = tf_keras.Model(base.input, probs, name=base.name)

  # The rebuild must compute what the Keras 3 model computes.
  rep = data.serving_preprocess(
      cfg.data, data.raw_images(cfg.data, "full_train",
                                int(settings['representative_examples']))).numpy()
  want = tf.nn.softmax(np.asarray(model3(rep[:32], training=False)), axis=-1).numpy()
  rebuild_diff = float(np.max(np.abs(float_model(rep[:32], training=False).numpy() - want)))
  if rebuild_diff > 1e-4:
    raise QATError(f"tf_keras rebuild differs from model.keras by {rebuild_diff}")

  tf.random.set_seed(int(cfg.seed))
  qat = tfmot.quantization.keras.quantize_model(float_model)
  # Without this, fine-tuning starts (and after a few dozen steps still is) at
  # tfmot's [-6, 6] activation ranges: see calibrate_ranges.
  calibration = calibrate_ranges(qat, float_model, rep, int(settings['qat_batch_size']))
  want_rep = float_model(rep, training=False).numpy()
  calibrated_diff = float(np.max(np.abs(qat(rep, training=False).numpy() - want_rep)))
  qat.compile(optimizer=tf_keras.optimizers.SGD(float(settings['qat_lr']), momentum=0.9),
              loss=tf_keras.losses.SparseCategoricalCrossentropy(),
              metrics=["accuracy"])
  batch = int(settings['qat_batch_size'])
  info = data.dataset_info(cfg.data)
  steps = max(1, info.split_sizes["full_train"] // batch)
  epochs = int(settings['qat_epochs'])
  history = {}
  if epochs > 0:
    ds = data.build_dataset(cfg.data, "full_train", batch, training=True, seed=int(cfg.seed))
    h = qat.fit(ds, epochs=epochs, steps_per_epoch=steps, verbose=2)
    history = {k: [float(x) for x in v] for k, v in h.history.items()}
  tuned_diff = float(np.max(np.abs(qat(rep, training=False).numpy() - want_rep)))

  def representative():
    for i in range(len(rep)):
      yield [rep[i:i + 1].astype(np.float32)]

  # Batch-1 input like the other TFLite files.
  shape = (1,) + tuple(float_model.input_shape[1:])
  fn = tf.function(lambda x: qat(x, training=False)).get_concrete_function(
      tf.TensorSpec(shape, tf.float32, name="images"))
  converter = tf.lite.TFLiteConverter.from_concrete_functions([fn], qat)
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = representative
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  converter.inference_input_type = tf.int8
  converter.inference_output_type = tf.int8
  content = converter.convert()
  tmp = args.out + ".tmp"
  with open(tmp, "wb") as f:
    f.write(content)
  os.replace(tmp, args.out)
  with open(args.out + ".json", "w") as f:
    json.dump({"qat_epochs": epochs, "qat_steps_per_epoch": steps, "qat_lr": settings["qat_lr"],
               "history": history, "tf_keras_layers": len(base.layers),
               "rebuild_max_abs_diff": rebuild_diff,
               "calibrated_ranges": calibration["calibrated"],
               "uncalibrated_ranges": calibration["uncalibrated"],
               # fake-quant model vs float on the calibration images (probabilities)
               "calibrated_max_abs_diff": calibrated_diff,
               "finetuned_max_abs_diff": tuned_diff}, f)


if __name__ == "__main__":
  from aps_tf import cli  # pylint: disable=g-import-not-at-top
  _define_flags()
  cli.run(main)
