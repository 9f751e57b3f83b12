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
  config.check_name(cfg.name)
  size = int(cfg.image_size)
  if cfg.name == 'imagenet2012':
    return {'method': 'bilinear', 'shorter_side': round(size / pp.CROP_FRACTION),
            'center_crop': [size, size],
            'steps': 'resize the shorter side to shorter_side, then center-crop'}
  return {'method': 'bilinear', 'size': [size, size],
          'steps': 'resize the whole image to size (no crop; skipped at that size)'}


def get(cfg) -> Recipe:
  config.check_name(cfg.name)
  size, augment = int(cfg.image_size), bool(cfg.augment)
  if cfg.name == 'digits':
    # Black background: zero padding; digits are not mirror-symmetric.
    return _small(size, digits.MEAN, digits.STD, augment=augment,
                  pad_mode='CONSTANT', flip=False)
  spec = tfds_source.SPECS[cfg.name]
  if cfg.name == 'imagenet2012':
    return _imagenet(size, spec.mean, spec.std, augment=augment)
  return _small(size, spec.mean, spec.std, augment=augment, pad_mode='REFLECT',
                flip=True)
