"""Embedded default dataset: scikit-learn's 1,797 real 8x8 handwritten digits.

It ships with scikit-learn (no download), so tests, demos and CI run the
whole system on real images. Splits: a stratified 20% test set with a fixed
seed (the same for every config, so test numbers stay comparable), the rest
split stratified into 'train' and 'reward' with `cfg.split_seed`.
"""

import functools

import numpy as np
from sklearn import datasets as sk_datasets
from sklearn import model_selection
import tensorflow as tf

from aps_tf.data import config
from aps_tf.data import preprocessing
from aps_tf.data import splits

NUM_CLASSES = 10
TEST_FRACTION = 0.2
TEST_SEED = 0
# Pixel statistics of all 1,797 images on the 0..255 scale.
MEAN = (77.85,)
STD = (95.85,)


@functools.lru_cache(maxsize=8)
def _arrays(image_size: int, reward_fraction: float,
            split_seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """split -> (uint8 images [N, S, S, 1], int32 labels [N]), read-only."""
  digits = sk_datasets.load_digits()
  images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  images = preprocessing.to_uint8(
      preprocessing.resize(tf.constant(images), image_size)).numpy()
  labels = digits.target.astype(np.int32)

  index = np.arange(len(labels))
  rest, test = model_selection.train_test_split(
      index, test_size=TEST_FRACTION, stratify=labels, random_state=TEST_SEED)
  train, reward = model_selection.train_test_split(
      rest, test_size=reward_fraction, stratify=labels[rest],
      random_state=split_seed)
  parts = {'train': train, 'reward': reward,
           'full_train': np.concatenate([train, reward]), 'test': test}
  out = {}
  for split, idx in parts.items():
    x, y = images[idx], labels[idx]
    x.flags.writeable = False
    y.flags.writeable = False
    out[split] = (x, y)
  return out


def arrays(cfg, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, S, S, 1], labels int32 [N]) of `split`."""
  config.check_split(split)
  return _arrays(int(cfg.image_size), float(cfg.reward_fraction),
                 int(cfg.split_seed))[split]


def info(cfg) -> config.DatasetInfo:
  sizes = {s: len(arrays(cfg, s)[1]) for s in config.SPLITS}
  return config.DatasetInfo(
      name='digits', image_shape=(cfg.image_size, cfg.image_size, 1),
      num_classes=NUM_CLASSES, split_sizes=sizes, mean=MEAN, std=STD)


def label_names(cfg) -> list[str]:
  del cfg
  return [str(d) for d in range(NUM_CLASSES)]


def cacheable(cfg) -> bool:
  del cfg  # Already in memory.
  return False


def examples(cfg, split: str, *, shard: tuple[int, int] = (0, 1),
             training: bool = False, seed: int | None = None
             ) -> tf.data.Dataset:
  """(uint8 image, int32 label) pairs of part shard[0] of shard[1]."""
  del training, seed  # No files to shuffle: order comes from the pipeline.
  images, labels = arrays(cfg, split)
  lo, hi = splits.shard_range(0, len(labels), *shard)
  return tf.data.Dataset.from_tensor_slices((images[lo:hi], labels[lo:hi]))
