"""Per-dataset preprocessing: how a served example becomes a model input.

One recipe per dataset family keeps the training, evaluation and serving
paths next to each other; `eval` is the single function both the eval
pipeline and `serving_preprocess` call, which is what keeps them identical.
"""

from collections.abc import Callable
import dataclasses

import tensorflow as tf

from aps_tf.data import config
from aps_tf.data import digits
from aps_tf.data import preprocessing as pp
from aps_tf.data import sources
from aps_tf.data import tfds_source


@dataclasses.dataclass(frozen=True)
class Recipe:
  # (served image, int seed [2]) -> float32 [S, S, C]
  train: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
  # uint8 [..., H, W, C] -> float32 [..., S, S, C]; traceable for serving
  eval: Callable[[tf.Tensor], tf.Tensor]
  # served image (uint8 or JPEG bytes) -> uint8 [H, W, C]
  decode: Callable[[tf.Tensor], tf.Tensor]
  # served image -> uint8 [H0, W0, C] at a fixed serving resolution
  raw: Callable[[tf.Tensor], tf.Tensor]


def _identity(x: tf.Tensor) -> tf.Tensor:
  return x


def _small(size: int, mean, std, *, augment: bool, pad_mode: str,
           flip: bool) -> Recipe:
  """CIFAR-style: pad size/8 (4 at 32) + random crop, optional flip."""
  pad = max(1, size // 8)

  def eval_fn(images):
    return pp.normalize(pp.resize(images, size), mean, std)

  def train_fn(image, seed):
    image = pp.resize(image, size)
    if augment:
      crop_seed, flip_seed = tf.unstack(
          tf.random.experimental.stateless_split(seed, 2))
      image = pp.random_pad_crop(image, pad, crop_seed, pad_mode)
      if flip:
        image = pp.random_flip(image, flip_seed)
    return pp.normalize(image, mean, std)

  return Recipe(train_fn, eval_fn, _identity, _identity)


def _imagenet(size: int, mean, std, *, augment: bool) -> Recipe:
  """Random-resized-crop + flip; eval resize size/0.875 + center crop."""
  resize_size = round(size / pp.CROP_FRACTION)

  def decode(image_bytes):
    return tf.io.decode_jpeg(image_bytes, channels=3)

  def eval_fn(images):
    return pp.normalize(
        pp.resize_shorter_center_crop(images, resize_size, size), mean, std)

  def train_fn(image_bytes, seed):
    if not augment:
      return eval_fn(decode(image_bytes))
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
    image = pp.random_resized_crop_jpeg(image_bytes, size, crop_seed)
    return pp.normalize(pp.random_flip(image, flip_seed), mean, std)

  def raw(image_bytes):
    # Square resize_size crop: serving's resize+crop then matches eval.
    return pp.to_uint8(pp.resize_shorter_center_crop(
        decode(image_bytes), resize_size, resize_size))

  return Recipe(train_fn, eval_fn, decode, raw)


def resize_record(cfg) -> dict:
  """The eval recipe's resize step as data (see `get`)."""
  if not cfg.get('source'):
    config.check_name(cfg.name)
  size = int(cfg.image_size)
  if cfg.name == 'imagenet2012' and not cfg.get('source'):
    return {'method': 'bilinear', 'shorter_side': round(size / pp.CROP_FRACTION),
            'center_crop': [size, size],
            'steps': 'resize the shorter side to shorter_side, then center-crop'}
  return {'method': 'bilinear', 'size': [size, size],
          'steps': 'resize the whole image to size (no crop; skipped at that size)'}


def normalization(cfg) -> str:
  """data.normalization with 'auto' read as 'mean_std' (no model here)."""
  mode = cfg.get('normalization') or 'mean_std'
  return 'mean_std' if mode == 'auto' else mode


def normalization_constants(cfg, mean, std):
  """(mean, std) of `(x - mean) / std` for data.normalization.

  `mean`/`std` are the dataset's statistics, used by 'mean_std' unless the
  config sets data.mean/data.std; the other modes are fixed affine maps.
  """
  mode = normalization(cfg)
  c = len(mean)
  if mode == 'none':
    return (0.0,) * c, (1.0,) * c
  if mode == 'unit':
    return (0.0,) * c, (255.0,) * c
  if mode == 'symmetric':
    return (127.5,) * c, (127.5,) * c
  mean = tuple(cfg.get('mean') or mean)
  std = tuple(cfg.get('std') or std)
  if len(mean) not in (1, c) or len(std) not in (1, c):
    raise ValueError(f'data.mean/data.std need 1 or {c} values, got {mean} / {std}')
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def get(cfg) -> Recipe:
  size, augment = int(cfg.image_size), bool(cfg.augment)
  if cfg.get('source'):
    kind, _ = config.parse_source(cfg.source)
    if kind == 'tfds':
      stats = tfds_source.pixel_stats(cfg)
    else:
      stats = sources.pixel_stats(sources.arrays(cfg, 'full_train')[0])
    mean, std = normalization_constants(cfg, *stats)
    recipe = _small(size, mean, std, augment=augment, pad_mode='REFLECT', flip=True)
    # Stored at any size (tfds) or at the model's (user sources): serve at S x S.
    return dataclasses.replace(
        recipe, raw=lambda x: pp.to_uint8(pp.resize(x, size)))
  config.check_name(cfg.name)
  if cfg.name == 'digits':
    # Black background: zero padding; digits are not mirror-symmetric.
    mean, std = normalization_constants(cfg, digits.MEAN, digits.STD)
    return _small(size, mean, std, augment=augment,
                  pad_mode='CONSTANT', flip=False)
  spec = tfds_source.SPECS[cfg.name]
  mean, std = normalization_constants(cfg, spec.mean, spec.std)
  if cfg.name == 'imagenet2012':
    return _imagenet(size, mean, std, augment=augment)
  return _small(size, mean, std, augment=augment, pad_mode='REFLECT',
                flip=True)
