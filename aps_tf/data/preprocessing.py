"""Pure TensorFlow image functions for training, evaluation and serving.

Graph-only (no Python-side state): the evaluation functions are traced into
SavedModel signatures as they are and so stay identical to the input
pipeline. Random ops are stateless and take an explicit int `seed` pair, so
augmentation is reproducible under a parallel `map`. Functions documented as
taking `[..., H, W, C]` work on single images and on batches alike.
"""

from collections.abc import Sequence

import tensorflow as tf

# Inception-style random-resized-crop (tensorflow/models official/vision).
_AREA_RANGE = (0.08, 1.0)
_ASPECT_RATIO_RANGE = (3.0 / 4.0, 4.0 / 3.0)
CROP_FRACTION = 0.875  # ImageNet eval: resize 256, center-crop 224.


def normalize(images: tf.Tensor, mean: Sequence[float],
              std: Sequence[float]) -> tf.Tensor:
  """[..., C] on the 0..255 scale -> float32 with per-channel mean 0, std 1."""
  # Multiply by a precomputed reciprocal: graph rewrites of a division differ
  # between tf.data and tf.function by an ulp; this form is bit-stable.
  scale = [1.0 / s for s in std]
  images = tf.cast(images, tf.float32)
  return (images - tf.constant(mean, tf.float32)) * tf.constant(scale,
                                                                tf.float32)


def resize(images: tf.Tensor, size: int) -> tf.Tensor:
  """Bilinear resize of [..., H, W, C] to size x size.

  Skipped when the static shape already matches; when shapes are dynamic it
  runs anyway and is then exact (half-pixel centres map pixels onto
  themselves), so both paths give the same numbers.
  """
  if images.shape[-3] == size and images.shape[-2] == size:
    return images
  return tf.image.resize(images, [size, size], method='bilinear')


def random_pad_crop(image: tf.Tensor, pad: int, seed: tf.Tensor,
                    mode: str = 'REFLECT') -> tf.Tensor:
  """Pads [H, W, C] by `pad` on each side, crops back to H x W at random."""
  padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode=mode)
  return tf.image.stateless_random_crop(padded, tf.shape(image), seed=seed)


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  return tf.image.stateless_random_flip_left_right(image, seed=seed)


def random_resized_crop_jpeg(image_bytes: tf.Tensor, size: int,
                             seed: tf.Tensor) -> tf.Tensor:
  """JPEG bytes -> random crop (8-100% area, 3/4-4/3 aspect) resized to size.

  Decodes only the crop window, which is what makes ImageNet training
  input-bound pipelines affordable.
  """
  shape = tf.image.extract_jpeg_shape(image_bytes)
  whole = tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, shape=[1, 1, 4])
  begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=whole, seed=seed, min_object_covered=0.1,
      aspect_ratio_range=_ASPECT_RATIO_RANGE, area_range=_AREA_RANGE,
      max_attempts=10, use_image_if_no_bounding_boxes=True)
  window = tf.stack([begin[0], begin[1], extent[0], extent[1]])
  crop = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)
  return tf.image.resize(crop, [size, size], method='bilinear')


def resize_shorter_center_crop(images: tf.Tensor, resize_size: int,
                               crop_size: int) -> tf.Tensor:
  """[..., H, W, C]: shorter side -> resize_size (bilinear), center crop."""
  shape = tf.shape(images)
  h = tf.cast(shape[-3], tf.float32)
  w = tf.cast(shape[-2], tf.float32)
  scale = resize_size / tf.minimum(h, w)
  new_h = tf.cast(tf.round(h * scale), tf.int32)
  new_w = tf.cast(tf.round(w * scale), tf.int32)
  images = tf.image.resize(images, tf.stack([new_h, new_w]), method='bilinear')
  return tf.image.crop_to_bounding_box(images, (new_h - crop_size) // 2,
                                       (new_w - crop_size) // 2, crop_size,
                                       crop_size)


def to_uint8(images: tf.Tensor) -> tf.Tensor:
  """Rounds float images on the 0..255 scale back to uint8."""
  images = tf.round(tf.cast(images, tf.float32))
  return tf.cast(tf.clip_by_value(images, 0.0, 255.0), tf.uint8)
