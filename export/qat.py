"""Quantisation-aware training (tfmot) of a dense child, in its own process.

tensorflow_model_optimization works only on tf_keras (legacy Keras 2) models
and switches the process to legacy Keras when imported, so this path runs in
its own process (`python -m export.qat ...`, TF_USE_LEGACY_KERAS=1) and is the
only module that imports tfmot:
  1. build the child as a tf_keras model from WORKDIR/arch.json with the same
     interpreter of the topology as the Keras 3 child
     (`aps_tf.models.dense.build(..., api=tf_keras)`), copy the trained
     weights from WORKDIR/model.keras by layer name, add a Softmax head;
  2. tfmot.quantization.keras.quantize_model (Conv-BN folding, fake quant);
     then set every fake-quant range from the float activations on the
     representative images (calibrate_ranges: tfmot's [-6, 6] initial ranges
     barely move in a short fine-tune and cost several points of accuracy);
  3. fine-tune cfg.export.qat_epochs on 'full_train' (SGD, cfg.export.qat_lr);
  4. write a SavedModel with the batch-1 `litert` signature to --out.
The parent process (`run_subprocess`) stays Keras 3 and converts that
SavedModel with `export.tflite.convert_saved_model` like every other format.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from aps_tf import errors
from aps_tf import fileio

# The export fields this path reads (defaults: configs/base.py) and --overrides may set.
SETTINGS = ("qat_epochs", "qat_lr", "qat_batch_size", "representative_examples")
SUMMARY_FILE = "qat_summary.json"


class QATError(RuntimeError):
  """The QAT subprocess failed (a bug or an environment problem)."""


class QATInputError(errors.UserError, ValueError):
  """A workdir QAT cannot use (e.g. no arch.json)."""


def run_subprocess(workdir: str, out_dir: str, config_overrides: dict | None = None,
                   timeout: float = 1800) -> dict:
  """Runs QAT for WORKDIR in a fresh process.

  Any filesystem: when WORKDIR or OUT_DIR is a URL, the workdir's inputs are
  staged in a local temporary directory and the SavedModel copied to OUT_DIR
  afterwards (a ram:// filesystem lives in one process only, so the
  subprocess could not see it).

  Args:
    workdir: the retraining workdir.
    out_dir: where the QAT SavedModel goes.
    config_overrides: values of `SETTINGS` instead of the config's.
    timeout: seconds before the subprocess is stopped.

  Returns:
    The QAT summary (epochs, accuracies, calibrated ranges).

  Raises:
    QATInputError: a missing input or bad override.
    QATError: the subprocess failed.
  """
  if not (fileio.is_local(workdir) and fileio.is_local(out_dir)):
    with fileio.staging_dir(prefix="aps-qat-") as stage:
      local_workdir = os.path.join(stage, "workdir")
      fileio.makedirs(local_workdir)
      for name in ("model.keras", "config.json", "arch.json"):
        if fileio.exists(os.path.join(workdir, name)):
          fileio.copy(os.path.join(workdir, name), os.path.join(local_workdir, name))
      local_out = os.path.join(stage, "out")
      summary = run_subprocess(local_workdir, local_out, config_overrides, timeout)
      fileio.copy_tree(local_out, out_dir)
      return summary
  env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  cmd = [sys.executable, "-m", "export.qat", f"--workdir={workdir}", f"--out={out_dir}",
         f"--overrides={json.dumps(config_overrides or {})}"]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
  if proc.returncode != 0:
    tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
    raise QATError(f"QAT subprocess failed (exit {proc.returncode}):\n{tail}")
  summary_path = os.path.join(out_dir, SUMMARY_FILE)
  summary = fileio.read_json(summary_path)
  fileio.remove(summary_path)
  return summary



def float_model(arch: dict, weights_model):
  """The tf_keras child of ARCH with WEIGHTS_MODEL's weights and a Softmax head.

  WEIGHTS_MODEL is any model whose layers are named like the dense child's
  (the Keras 3 model.keras): weights are copied by layer name.

  Args:
    arch: the architecture file's contents.
    weights_model: the model to copy weights from.

  Returns:
    A tf_keras model.
  """
  import tf_keras  # pylint: disable=g-import-not-at-top
  from aps_tf import archfile  # pylint: disable=g-import-not-at-top
  from aps_tf.models import dense  # pylint: disable=g-import-not-at-top
  base = dense.build(archfile.topology_of(arch), arch["widths"], api=tf_keras,
                     name=weights_model.name)
  for layer in base.layers:
    if layer.weights:
      try:
        source = weights_model.get_layer(layer.name)
      except ValueError as e:
        raise QATInputError(f"model.keras has no layer {layer.name!r} of arch.json's "
                            f"{arch['model']}") from e
      layer.set_weights(source.get_weights())
  probs = tf_keras.layers.Softmax(name="probabilities")(base.output)
  return tf_keras.Model(base.input, probs, name=base.name)


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

  tfmot has no public API to set a range (its quantizers only update ranges
  inside a training step), so this reads the range variables of tfmot's
  default 8-bit wrappers (`QuantizeLayer.quantizer_vars`, and the wrapper
  attributes `_weight_vars`, `_output_quantizer_vars`, `_quantize_activations`)
  as tensorflow-model-optimization 0.8 names them; requirements.txt pins that
  version and tests/test_export.py::QATTest fails (calibrated_ranges == 0 or a
  non-empty `uncalibrated` list) if a new version moves them.
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


def run(workdir: str, out_dir: str, overrides: dict | None = None) -> dict:
  """QAT of WORKDIR's child (in this process; tf_keras).

  Args:
    workdir: the retraining workdir.
    out_dir: where the QAT SavedModel and summary go.
    overrides: values of `SETTINGS` instead of the config's.

  Returns:
    The summary written beside the SavedModel.

  Raises:
    QATInputError: the architecture file is missing.
    QATError: the tf_keras child does not compute what model.keras does.
  """
  os.environ["TF_USE_LEGACY_KERAS"] = "1"
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_model_optimization as tfmot  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top

  from aps_tf import archfile  # pylint: disable=g-import-not-at-top
  from aps_tf import config_check  # pylint: disable=g-import-not-at-top
  from aps_tf import data  # pylint: disable=g-import-not-at-top
  from export import saved_model as saved_model_lib  # pylint: disable=g-import-not-at-top

  cfg = config_check.with_defaults(fileio.read_json(os.path.join(workdir, "config.json")))
  arch_path = os.path.join(workdir, "arch.json")
  if not fileio.exists(arch_path):
    raise QATInputError(f"{arch_path} not found: QAT builds the child from its architecture")
  arch = archfile.load(arch_path)
  settings = {k: cfg.export[k] for k in SETTINGS}
  settings.update(overrides or {})
  model3 = fileio.load_keras(os.path.join(workdir, "model.keras"), compile=False)
  fmodel = float_model(arch, model3)

  # The tf_keras child must compute what the Keras 3 model computes.
  rep = data.serving_preprocess(
      cfg.data, data.raw_images(cfg.data, "full_train",
                                int(settings["representative_examples"]))).numpy()
  want = tf.nn.softmax(np.asarray(model3(rep[:32], training=False)), axis=-1).numpy()
  rebuild_diff = float(np.max(np.abs(fmodel(rep[:32], training=False).numpy() - want)))
  if rebuild_diff > 1e-4:
    raise QATError(f"tf_keras child differs from model.keras by {rebuild_diff}")

  tf.random.set_seed(int(cfg.seed))
  qat = tfmot.quantization.keras.quantize_model(fmodel)
  # Without this, fine-tuning starts (and after a few dozen steps still is) at
  # tfmot's [-6, 6] activation ranges: see calibrate_ranges.
  calibration = calibrate_ranges(qat, fmodel, rep, int(settings["qat_batch_size"]))
  want_rep = fmodel(rep, training=False).numpy()
  calibrated_diff = float(np.max(np.abs(qat(rep, training=False).numpy() - want_rep)))
  qat.compile(optimizer=tf_keras.optimizers.SGD(float(settings["qat_lr"]), momentum=0.9),
              loss=tf_keras.losses.SparseCategoricalCrossentropy(),
              metrics=["accuracy"])
  batch = int(settings["qat_batch_size"])
  info = data.dataset_info(cfg.data)
  steps = max(1, info.split_sizes["full_train"] // batch)
  epochs = int(settings["qat_epochs"])
  history = {}
  if epochs > 0:
    ds = data.build_dataset(cfg.data, "full_train", batch, training=True, seed=int(cfg.seed))
    h = qat.fit(ds, epochs=epochs, steps_per_epoch=steps, verbose=2)
    history = {k: [float(x) for x in v] for k, v in h.history.items()}
  tuned_diff = float(np.max(np.abs(qat(rep, training=False).numpy() - want_rep)))

  # The same batch-1 signature the exported SavedModel has. Only the variables
  # are tracked (not the tf_keras model), so saving does not trace tfmot layers.
  shape = (1,) + tuple(fmodel.input_shape[1:])

  @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32,
                                              name=saved_model_lib.INPUT_KEY)])
  def litert(images):
    return {"probabilities": qat(images, training=False)}

  module = tf.Module()
  module.qat_variables = list(qat.variables)
  module.litert = litert
  tf.saved_model.save(module, out_dir,
                      signatures={saved_model_lib.LITERT_SIGNATURE: litert})
  summary = {"qat_epochs": epochs, "qat_steps_per_epoch": steps, "qat_lr": settings["qat_lr"],
             "history": history, "tf_keras_layers": len(fmodel.layers),
             "rebuild_max_abs_diff": rebuild_diff,
             "calibrated_ranges": calibration["calibrated"],
             "uncalibrated_ranges": calibration["uncalibrated"],
             # fake-quant model vs float on the calibration images (probabilities)
             "calibrated_max_abs_diff": calibrated_diff,
             "finetuned_max_abs_diff": tuned_diff}
  fileio.write_json(os.path.join(out_dir, SUMMARY_FILE), summary)
  return summary


def _define_flags() -> None:
  """Flags of `python -m export.qat` (defined only when run as the binary: the
  export binary imports this module and has its own --workdir)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("workdir", None, "Retraining workdir (model.keras, config.json, arch.json).")
  flags.DEFINE_string("out", None, "Directory for the QAT SavedModel and its summary.")
  flags.DEFINE_string("overrides", "{}", "JSON {export field: value}.")
  flags.mark_flags_as_required(["workdir", "out"])


def check_inputs(workdir: str, out: str, overrides_json: str) -> dict:
  """The overrides, with every input checked before anything is written.

  Args:
    workdir: the retraining workdir.
    out: where the QAT SavedModel will go.
    overrides_json: a JSON object of `SETTINGS` values.

  Returns:
    The overrides.

  Raises:
    QATInputError: a missing file, bad JSON or an unknown override.
  """
  from aps_tf import config_check  # pylint: disable=g-import-not-at-top
  from aps_tf import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  for name in ("model.keras", "config.json", "arch.json"):
    if not fileio.exists(os.path.join(workdir, name)):
      raise QATInputError(f"{os.path.join(workdir, name)} not found: retrain first")
  try:
    overrides = json.loads(overrides_json)
  except ValueError as e:
    raise QATInputError(f"--overrides: expected a JSON object, got {overrides_json!r}") from e
  if not isinstance(overrides, dict) or any(k not in SETTINGS for k in overrides):
    raise QATInputError(f"--overrides: expected a JSON object with keys among "
                        f"{sorted(SETTINGS)}, got {overrides_json!r}")
  path = os.path.join(workdir, "config.json")
  try:
    cfg = fileio.read_json(path)
  except ValueError as e:
    raise QATInputError(f"{path}: not valid JSON: {e}") from e
  config_check.check_export(config_check.with_defaults(cfg))
  workdir_lib.ensure_writable(fileio.dirname(out))
  return overrides


def main(argv):
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  overrides = check_inputs(args.workdir, args.out, args.overrides)
  run(args.workdir, args.out, overrides)
  return 0


if __name__ == "__main__":
  from aps_tf import cli  # pylint: disable=g-import-not-at-top
  _define_flags()
  cli.run(main)
