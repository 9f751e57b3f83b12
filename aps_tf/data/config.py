"""Data config: the names, splits and defaults every input pipeline agrees on.

`source` names where the images come from: '' (the built-in dataset `name`),
'tfds:NAME' (any prepared tfds image-classification dataset), 'folder:DIR'
(`keras.utils.image_dataset_from_directory` layout) or 'python:KEY' (a
`tf.data.Dataset` registered in-process, `aps_tf.data.sources.register`).

The search needs three disjoint views of the labelled data: 'train' (weight
updates), 'reward' (controller reward, never trained on) and 'test' (final
evaluation only). 'full_train' is 'train' + 'reward', for retraining the
picked architecture.
"""

import dataclasses

import ml_collections

from aps_tf import schema
from aps_tf.configs import base

DATASETS = schema.DATASETS
SPLITS = schema.SPLITS
SOURCE_KINDS = schema.SOURCE_KINDS
NORMALIZATIONS = schema.NORMALIZATIONS  # see schema.NORMALIZATIONS
parse_source = schema.parse_source


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model builder needs to know about a dataset, without reading it."""
  name: str
  image_shape: tuple[int, int, int]  # after preprocessing (H, W, C)
  num_classes: int
  split_sizes: dict[str, int]  # 'train', 'reward', 'full_train', 'test'
  mean: tuple[float, ...]  # per-channel normalisation on the 0..255 scale
  std: tuple[float, ...]
  normalization: str = 'mean_std'  # see NORMALIZATIONS
  class_names: tuple[str, ...] = ()  # folder sources: the class directories


def default_config(name: str = 'digits') -> ml_collections.ConfigDict:
  """Defaults for `name` (the `data` section of configs/base.py).

  Args:
    name: one of DATASETS.

  Returns:
    A fresh ConfigDict; override fields on it.

  Raises:
    ValueError: `name` is not a known dataset.
  """
  check_name(name)
  return base.data_config(name)


def check_name(name: str) -> None:
  if name not in DATASETS:
    raise ValueError(f'Unknown dataset {name!r}; allowed: {DATASETS}.')


def display_name(cfg) -> str:
  """The dataset's name in records: the source when one is set."""
  return cfg.get('source') or cfg.name


def check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; allowed: {SPLITS}.')


def validate(cfg: ml_collections.ConfigDict) -> None:
  """Fails early on config values that would otherwise fail deep in tf.data."""
  check_name(cfg.name)
  if cfg.get('source'):
    parse_source(cfg.source)
  if cfg.get('normalization', 'mean_std') not in NORMALIZATIONS:
    raise ValueError(f'normalization must be one of {NORMALIZATIONS}, got '
                     f'{cfg.normalization!r}.')
  if not 0.0 < cfg.get('test_fraction', 0.2) < 1.0:
    raise ValueError(
        f'test_fraction must be in (0, 1), got {cfg.test_fraction!r}.')
  if not 0.0 < cfg.reward_fraction < 1.0:
    raise ValueError(
        f'reward_fraction must be in (0, 1), got {cfg.reward_fraction!r}.')
  if cfg.image_size < 1:
    raise ValueError(f'image_size must be positive, got {cfg.image_size!r}.')
