"""A search of the user's own Keras model: the config filled in from the model.

`model.keras_file` names a `.keras` file; `resolve_config(cfg)` reads it once
and fills what the model decides: the input size and channels
(`data.image_size`, `data.channels`: images are resized to the model's input), the classes (`data.num_classes`), the
input normalisation for `data.normalization='auto'` ('none' when the model
starts with its own Rescaling or Normalization layer, else 'mean_std') and
batch sizes no larger than small splits. The search and train binaries and
`aps_tf.search` all resolve through here before the run, so the resolved
values are what a workdir's config.json records (the search then turns
`search.reward.target_fraction` into an absolute target,
`aps_tf.search.settings.resolve_config`).
"""

from __future__ import annotations

import functools

import ml_collections

from aps_tf import errors
from aps_tf import fileio

USER_MODEL_FILE = "user_model.keras"
# First layers that mean "the model normalises its own 0..255 input".
_SELF_NORMALISING = ("Rescaling", "Normalization")
# Layers that may come before them without changing pixels' scale.
_PASS_THROUGH = ("InputLayer", "Resizing", "ZeroPadding2D")


class UserModelError(errors.UserError, ValueError):
  """The user's model file cannot be read or does not fit the data."""


def is_user_model(cfg) -> bool:
  return bool(cfg.get("model", {}).get("keras_file"))


@functools.lru_cache(maxsize=2)
def _load_cached(path: str, mtime: float):
  del mtime  # cache key only: a rewritten file is read again
  return fileio.load_keras(path, compile=False)


def load(path: str):
  """The Keras model in `path` (.keras), or a UserModelError saying why not."""
  if not path.endswith(".keras"):
    raise UserModelError(f"model.keras_file={path}: expected a Keras 3 '.keras' file "
                         "(model.save('model.keras'))")
  if not fileio.exists(path):
    raise UserModelError(f"model.keras_file={path}: no such file")
  try:
    mtime = fileio.mtime(path)
    return _load_cached(path, mtime)
  except Exception as e:  # pylint: disable=broad-except
    raise UserModelError(f"model.keras_file={path}: cannot load the Keras model: "
                         f"{' '.join(str(e).split())[:300]}") from e


def input_spec(model) -> tuple[int, int]:
  """(size, channels) of a model's square image input."""
  shape = getattr(model, "input_shape", None)
  if isinstance(shape, list) or shape is None or len(shape) != 4:
    raise UserModelError(f"model {model.name!r}: expected one image input [N, H, W, C], got "
                         f"input shape {shape}")
  _, h, w, c = shape
  if h is None or w is None or h != w or c is None:
    raise UserModelError(f"model {model.name!r}: the input must have a fixed square size "
                         f"(H == W) and known channels, got {shape[1:]}; rebuild it with "
                         "keras.Input(shape=(S, S, C))")
  return int(h), int(c)


def num_classes(model) -> int:
  shape = getattr(model, "output_shape", None)
  if isinstance(shape, list) or shape is None or len(shape) != 2 or shape[-1] is None:
    raise UserModelError(f"model {model.name!r}: expected one classifier output [N, classes], "
                         f"got output shape {shape}")
  return int(shape[-1])


def normalises_itself(model) -> bool:
  """True when the first pixel-changing layer is Rescaling or Normalization."""
  for layer in model.layers:
    name = type(layer).__name__
    if name in _SELF_NORMALISING:
      return True
    if name not in _PASS_THROUGH:
      return False
  return False


def resolve_config(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of cfg with the fields the user's model decides filled in.

  Configs without `model.keras_file` come back unchanged (as a copy).

  Args:
    cfg: a full config (configs/keras_model.py and overrides).

  Returns:
    The resolved config.

  Raises:
    UserModelError: the file is missing or unreadable, its input is not a
      square image or its classes differ from the data's.
  """
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  if cfg.model.get("name") == "keras" and not is_user_model(cfg):
    raise UserModelError("model.name='keras' needs the model: --config.model.keras_file="
                         "PATH.keras (docs/own_model.md)")
  if is_user_model(cfg):
    _fill_from_model(cfg)
  return cfg


def _fill_from_model(cfg: ml_collections.ConfigDict) -> None:
  model = load(cfg.model.keras_file)
  size, channels = input_spec(model)
  d = cfg.data
  d.image_size, d.channels = size, channels  # images are resized to the model's input
  classes = num_classes(model)
  if d.get("num_classes") not in (None, classes):
    raise UserModelError(f"data.num_classes={d.num_classes} but {cfg.model.keras_file} has "
                         f"{classes} outputs")
  from aps_tf import data  # pylint: disable=g-import-not-at-top
  found = data.dataset_info(d).num_classes
  if found > classes:
    raise UserModelError(f"data.source={d.get('source') or d.name} has {found} classes, the "
                         f"model {cfg.model.keras_file} has {classes} outputs")
  d.num_classes = classes
  if d.get("normalization") == "auto":
    d.normalization = "none" if normalises_itself(model) else "mean_std"
  _fit_batches(cfg, data.dataset_info(d).split_sizes)


def _fit_batches(cfg, sizes: dict) -> None:
  """Batch sizes no larger than the splits they are drawn from (small user data)."""
  from absl import logging  # pylint: disable=g-import-not-at-top
  for field, limit in (("search.batch_size", min(sizes["train"], sizes["reward"])),
                       ("train.batch_size", sizes["full_train"])):
    section, key = field.split(".")
    if cfg[section][key] > limit:
      logging.warning("%s=%d exceeds the data's %d examples; using %d", field,
                      cfg[section][key], limit, limit)
      cfg[section][key] = limit


def init_from_keras(child, cfg) -> dict:
  """Copies the user's weights into a thinner child: each layer's first channels.

  Every weight of a child layer is the leading block of the same-named layer's
  weight in `model.keras_file` (kernels [.., in, out], biases, batch-norm
  gamma/beta/statistics): the ordinal sub-network of the user's model, for
  any widths (`train.init='keras'`, e.g. a uniformly scaled child). A layer
  after a `Concatenate` would need per-input blocks, so models with one are
  refused here; start those from the supernet (`train.init='supernet'`).

  Args:
    child: the dense child (the user's layer names, fewer channels).
    cfg: the config; `model.keras_file` is the user's model.

  Returns:
    {'keras_file': path, 'layers': number of layers copied}.

  Raises:
    UserModelError: a layer the user's model lacks, a wider child, or a
      Concatenate in the model.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  user = load(cfg.model.keras_file)
  concat = [l.name for l in user.layers if type(l).__name__ == "Concatenate"]
  if concat:
    raise UserModelError(f"train.init='keras': {cfg.model.keras_file} has Concatenate layers "
                         f"{concat}, whose inputs' channels are not a leading block; use "
                         "train.init='supernet'")
  done = 0
  for layer in child.layers:
    if not layer.weights:
      continue
    try:
      source = user.get_layer(layer.name)
    except ValueError as e:
      raise UserModelError(f"train.init='keras': {cfg.model.keras_file} has no layer "
                           f"{layer.name!r}") from e
    values = []
    for w, u in zip(layer.get_weights(), source.get_weights()):
      if w.ndim != u.ndim or any(a > b for a, b in zip(w.shape, u.shape)):
        raise UserModelError(f"train.init='keras': layer {layer.name!r} {w.shape} is not a "
                             f"block of the user's {u.shape}")
      values.append(np.asarray(u[tuple(slice(0, n) for n in w.shape)]))
    layer.set_weights(values)
    done += 1
  return {"keras_file": cfg.model.keras_file, "layers": done}
