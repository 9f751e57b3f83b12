"""The enumerated values of the config, in the bottom layer.

Config checking (`aps_tf.config_check`) and the config defaults
(`configs/base.py`) sit below every model, search and export module, so the
choices they check against live here; the modules that implement a choice
(`aps_tf.sharing`, `aps_tf.flops`, `aps_tf.search.reward`, ...) take their
tuples from this module, so each list is written once.
"""

from __future__ import annotations

import re

# Distribution strategies (`aps_tf.distribute`) and mixed-precision policies
# (`aps_tf.precision`).
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
PRECISION_POLICIES = ("", "mixed_bfloat16", "mixed_float16")

# Datasets and their splits (`aps_tf.data`).
DATASETS = ("digits", "cifar10", "cifar100", "imagenet2012")
SPLITS = ("train", "reward", "full_train", "test")
IMAGE_SIZE = {"digits": 16, "cifar10": 32, "cifar100": 32, "imagenet2012": 224}
# User data (`data.source`, `aps_tf.data.sources`): tfds:NAME, folder:DIR or
# python:KEY (a dataset registered with `aps_tf.data.register`).
SOURCE_KINDS = ("tfds", "folder", "python")
# How 0..255 pixels become model inputs. 'mean_std': per channel (x - mean) /
# std with the dataset's statistics (data.mean/std, measured on the training
# split of a user source when unset); 'none': 0..255 floats, for a model that
# starts with its own Rescaling/Normalization layers; 'unit': x / 255;
# 'symmetric': x / 127.5 - 1 (keras.applications MobileNet/ResNetV2 style);
# 'auto': 'none' for a Keras model that starts with a Rescaling or
# Normalization layer, else 'mean_std' (resolved where the model is loaded).
NORMALIZATIONS = ("mean_std", "none", "unit", "symmetric", "auto")

# Search spaces and retrained shortcuts (`aps_tf.models.topology`).
SPACES = ("aps_tf", "reference")
# Retrained ResNet children's shortcut on a strided block: 'conv_bn' (strided
# 1x1 conv + BN) or 'avgpool_conv' (2x2 average pool, then 1x1 conv without BN,
# as the authors' retrained children). Stride 1 with a width change is always
# 1x1 conv + BN; otherwise identity.
DOWNSAMPLE_SHORTCUTS = ("conv_bn", "avgpool_conv")
# The supernet's residual shortcut (`aps_tf.models.supernet`) and its
# meta-weight initialiser.
SUPERNET_SHORTCUTS = ("aps", "pairwise")
META_INITS = ("he_normal", "kaiming_uniform")
# The user's own Keras model (`model.keras_file`, `aps_tf.models.keras_import`):
# where the supernet's weights start ('' or None: the initialisers; 'keras':
# the file's weights, `graph_supernet.init_from_config`), and which of each
# layer's channels a narrower candidate keeps ('none': the first ones; 'l1':
# the largest-l1 ones).
MODEL_INITS = ("", "keras")
CHANNEL_ORDERS = ("none", "l1")
# `model.name` of a config whose model is the user's `model.keras_file`.
KERAS_MODEL = "keras"

# Parameter sharing (`aps_tf.sharing`) and what the transition minimises per
# side (`aps_tf.transition`).
SHARING_MODES = ("ordinal", "independent", "transitional")
PHI_OBJECTIVES = ("exact", "reference")

# Cost counting (`aps_tf.flops`) and rewards (`aps_tf.search.reward`).
FLOPS_CONVENTIONS = ("full", "search")
REWARD_KINDS = ("flops", "params", "latency")
REWARD_BN_MODES = ("batch", "moving")
PICK_RULES = ("closest_accurate", "closest_to_target", "best_reward")  # aps_tf.search.beam.RULES
# The policy's parameterisation (`aps_tf.policy`).
POLICY_KINDS = ("per_decision", "shared")
SEARCH_LR_SCHEDULES = ("piecewise", "cosine")
# Latency-table formats (`aps_tf.latency.measure`): short name -> LiteRT format.
LATENCY_FORMATS = {"float32": "tflite_float32", "float16": "tflite_float16",
                   "dynamic": "tflite_dynamic", "int8": "tflite_int8"}

# Retraining (`aps_tf.train`).
TRAIN_OPTIMIZERS = ("sgd", "momentum", "adam")
TRAIN_SCHEDULES = ("cosine", "constant")
TRAIN_INITS = ("scratch", "supernet", "keras")

# Exported formats (`export.exporter`, `export.tflite`).
TFLITE_FORMATS = ("tflite_float32", "tflite_float16", "tflite_dynamic", "tflite_int8",
                  "tflite_qat_int8")
EXPORT_FORMATS = ("saved_model",) + TFLITE_FORMATS


def is_transitional(mode: str) -> bool:
  """Whether a sharing mode learns Phi (the transition between P and Q sharing).

  Args:
    mode: a value of `search.sharing`.

  Returns:
    True for 'transitional', the only mode with a Phi variable and its step.
  """
  return mode == "transitional"


def parse_source(source: str) -> tuple[str, str]:
  """Splits a non-empty `data.source`.

  Args:
    source: tfds:NAME, folder:DIR or python:KEY.

  Returns:
    (kind, argument), kind one of SOURCE_KINDS.

  Raises:
    ValueError: `source` has none of these forms.
  """
  kind, sep, arg = str(source).partition(":")
  if not sep or kind not in SOURCE_KINDS or not arg:
    raise ValueError(
        f"data.source must be tfds:NAME, folder:DIR or python:KEY, got {source!r}.")
  return kind, arg


def model_names() -> str:
  """The accepted `model.name` values, in words for error messages."""
  return "resnet<6n+2> (e.g. resnet20, resnet56), resnet18, mobilenet_v2"


def family_of(model: str) -> str:
  """Maps a model name to its family.

  Args:
    model: a `model.name` value.

  Returns:
    'resnet_cifar', 'resnet_imagenet' or 'mobilenet_v2'.

  Raises:
    ValueError: `model` names no shipped family; the message lists the choices.
  """
  if model == "resnet18":
    return "resnet_imagenet"
  if model == "mobilenet_v2":
    return "mobilenet_v2"
  m = re.fullmatch(r"resnet(\d+)", model or "")
  if m and int(m.group(1)) >= 8 and (int(m.group(1)) - 2) % 6 == 0:
    return "resnet_cifar"
  raise ValueError(f"unknown model {model!r}; expected one of: {model_names()}")
