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
from ml_collections import config_dict

DATASETS = ('digits', 'cifar10', 'cifar100', 'imagenet2012')
SPLITS = ('train', 'reward', 'full_train', 'test')
SOURCE_KINDS = ('tfds', 'folder', 'python')
# How 0..255 pixels become model inputs. 'mean_std': per channel (x - mean) /
# std with the dataset's statistics (data.mean/std, measured on the training
# split of a user source when unset); 'none': 0..255 floats, for a model that
# starts with its own Rescaling/Normalization layers; 'unit': x / 255;
# 'symmetric': x / 127.5 - 1 (keras.applications MobileNet/ResNetV2 style);
# 'auto': 'none' for a Keras model that starts with a Rescaling or
# Normalization layer, else 'mean_std' (resolved where the model is loaded).
NORMALIZATIONS = ('mean_std', 'none', 'unit', 'symmetric', 'auto')

_IMAGE_SIZE = {'digits': 16, 'cifar10': 32, 'cifar100': 32, 'imagenet2012': 224}


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
  """Defaults for `name`; override fields on the returned ConfigDict."""
  check_name(name)
  return ml_collections.ConfigDict({
      'name': name,
      'source': '',  # '' (built-in `name`) | tfds:NAME | folder:DIR | python:KEY
      'normalization': 'mean_std',  # see NORMALIZATIONS
      'mean': config_dict.placeholder(tuple),  # None: the dataset's / measured
      'std': config_dict.placeholder(tuple),
      'channels': config_dict.placeholder(int),  # None: the source's (folders: 3)
      'num_classes': config_dict.placeholder(int),  # None: the source's
      # User sources without a test split: this stratified fraction (fixed
      # seed) is held out as 'test'.
      'test_fraction': 0.2,
      'data_dir': config_dict.placeholder(str),  # None: tfds default dir
      'manual_dir': config_dict.placeholder(str),  # imagenet2012 tar files
      'download': False,  # never touch the network unless asked to
      'image_size': _IMAGE_SIZE[name],
      'reward_fraction': 0.5,
      'split_seed': 0,  # train/reward permutation of the embedded dataset
      'cache': True,  # in-memory cache of decoded images where they fit
      'augment': True,
      'deterministic': False,  # force ordered parallel map even without seed
      'shuffle_buffer': 10_000,
  })


def check_name(name: str) -> None:
  if name not in DATASETS:
    raise ValueError(f'Unknown dataset {name!r}; allowed: {DATASETS}.')


def parse_source(source: str) -> tuple[str, str]:
  """('tfds'|'folder'|'python', argument) of a non-empty `data.source`."""
  kind, sep, arg = str(source).partition(':')
  if not sep or kind not in SOURCE_KINDS or not arg:
    raise ValueError(
        f'data.source must be tfds:NAME, folder:DIR or python:KEY, got {source!r}.')
  return kind, arg


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
