"""The user's own images: an image folder or an in-process `tf.data.Dataset`.

Both are read once into memory as uint8 [N, S, S, C] at the model's input
size (`data.image_size`, bilinear resize) and split like the embedded digits:
a held-out 'test' set (the source's own test split when it has one, else a
stratified `data.test_fraction` with a fixed seed), the rest split stratified
into 'train' and 'reward' with `data.split_seed`. That keeps every split a
fixed, disjoint index set on every host and every run, which the search's
resume and sharding rely on. For datasets that do not fit in memory, prepare
them as a tfds dataset and use 'tfds:NAME'.

  folder:DIR   DIR/CLASS/*.{jpg,png,bmp,gif}, classes in sorted order (the
               `keras.utils.image_dataset_from_directory` layout); or
               DIR/train/CLASS/... with DIR/test/CLASS/... (or validation/).
  python:KEY   a dataset registered with `register(KEY, ds)`: unbatched or
               batched (image, label) pairs, images on the 0..255 scale, or
               {'train': ds, 'test': ds}. The registry lives in this process
               only (configs hold names, not datasets).
"""

from __future__ import annotations

import functools
import os
import threading

import numpy as np
import tensorflow as tf

from aps_tf import errors
from aps_tf.data import config
from aps_tf.data import preprocessing
from aps_tf.data import splits

TEST_SEED = 0
_TEST_DIRS = ('test', 'validation', 'val')
_COLOR_MODES = {1: 'grayscale', 3: 'rgb', 4: 'rgba'}

_lock = threading.Lock()
_registry: dict[str, tuple[int, object]] = {}
_generation = [0]


class DataSourceError(errors.UserError, ValueError):
  """A user data source that cannot be read (the message says which and why)."""


def register(key: str, dataset) -> str:
  """Makes `dataset` readable as `data.source='python:KEY'` in this process.

  Args:
    key: the name after 'python:'.
    dataset: a `tf.data.Dataset` of (image, label) pairs (batched or not;
      images uint8 or float on the 0..255 scale, [H, W, C]), or a dict
      {'train': ds, 'test': ds} ('test' optional).

  Returns:
    The `data.source` string, 'python:KEY'.

  Raises:
    DataSourceError: dataset is neither a `tf.data.Dataset` nor such a dict.
  """
  parts = dataset if isinstance(dataset, dict) else {'train': dataset}
  unknown = set(parts) - {'train', 'test'}
  if unknown or 'train' not in parts or not all(
      isinstance(d, tf.data.Dataset) for d in parts.values()):
    raise DataSourceError(
        f"python:{key}: expected a tf.data.Dataset of (image, label) or a dict "
        f"{{'train': Dataset, 'test': Dataset}}, got {type(dataset).__name__}"
        + (f' with keys {sorted(parts)}' if isinstance(dataset, dict) else ''))
  with _lock:
    _generation[0] += 1
    _registry[key] = (_generation[0], parts)
  return f'python:{key}'


def unregister(key: str) -> None:
  with _lock:
    _registry.pop(key, None)


def _registered(key: str) -> tuple[int, dict]:
  with _lock:
    if key not in _registry:
      known = ', '.join(sorted(_registry)) or 'none'
      raise DataSourceError(
          f'data.source=python:{key}: no dataset registered under {key!r} in this '
          f'process (registered: {known}). Python datasets exist only in the '
          'process that registers them (aps_tf.search(model, dataset) does); '
          'from the command line use folder:DIR or tfds:NAME.')
    return _registry[key]


def _to_uint8(images: np.ndarray, source: str) -> np.ndarray:
  if images.dtype == np.uint8:
    return images
  images = images.astype(np.float32)
  if images.size and float(images.max()) <= 1.0 and float(images.min()) >= 0.0:
    raise DataSourceError(
        f'{source}: images are floats in [0, 1]; aps-tf reads pixels on the 0..255 '
        'scale (multiply by 255; data.normalization says what the model gets)')
  return np.clip(np.round(images), 0, 255).astype(np.uint8)


def _read_dataset(ds: tf.data.Dataset, size: int, channels: int | None,
                  source: str) -> tuple[np.ndarray, np.ndarray]:
  spec = ds.element_spec
  if not (isinstance(spec, tuple) and len(spec) == 2):
    raise DataSourceError(f'{source}: expected (image, label) elements, got {spec}')
  rank = spec[0].shape.rank
  if rank == 4:
    ds = ds.unbatch()
  elif rank != 3:
    raise DataSourceError(f'{source}: images must be [H, W, C] (or batches '
                          f'[B, H, W, C]), got shape {spec[0].shape}')
  ds = ds.map(lambda x, y: (preprocessing.resize(tf.cast(x, tf.float32), size),
                            tf.cast(tf.reshape(y, []), tf.int32)))
  images, labels = [], []
  for x, y in ds.batch(256).as_numpy_iterator():
    images.append(x)
    labels.append(y)
  if not labels:
    raise DataSourceError(f'{source}: the dataset is empty')
  images = _to_uint8(np.concatenate(images), source)
  if channels is not None and images.shape[-1] != channels:
    raise DataSourceError(f'{source}: images have {images.shape[-1]} channels, the '
                          f'model takes {channels} (data.channels)')
  return images, np.concatenate(labels)


def _has_class_dirs(path: str) -> bool:
  return tf.io.gfile.isdir(path) and any(
      tf.io.gfile.isdir(os.path.join(path, n)) for n in tf.io.gfile.listdir(path))


def _read_folder(path: str, size: int, channels: int, source: str):
  """(images, labels, class_names) of one image_dataset_from_directory folder."""
  import keras  # pylint: disable=g-import-not-at-top
  if channels not in _COLOR_MODES:
    raise DataSourceError(f'{source}: data.channels must be 1, 3 or 4, got {channels}')
  try:
    ds = keras.utils.image_dataset_from_directory(
        path, labels='inferred', label_mode='int', color_mode=_COLOR_MODES[channels],
        batch_size=None, image_size=(size, size), shuffle=False, verbose=False)
  except ValueError as e:
    raise DataSourceError(f'{source}: {path}: {e}') from e
  class_names = tuple(ds.class_names)
  images, labels = _read_dataset(ds, size, channels, source)
  return images, labels, class_names


def _stratified(index, labels, test_size, seed):
  from sklearn import model_selection  # pylint: disable=g-import-not-at-top
  try:
    return model_selection.train_test_split(index, test_size=test_size, stratify=labels,
                                            random_state=seed)
  except ValueError:  # a class with a single example: plain random split
    return model_selection.train_test_split(index, test_size=test_size, random_state=seed)


@functools.lru_cache(maxsize=4)
def _load(source: str, generation: int, size: int, channels: int | None,
          test_fraction: float, reward_fraction: float, split_seed: int) -> dict:
  """split -> (images, labels) read-only, plus 'class_names' and 'channels'."""
  del generation  # in the cache key only: a re-registered dataset is re-read
  kind, arg = config.parse_source(source)
  class_names = ()
  if kind == 'folder':
    if not tf.io.gfile.isdir(arg):
      raise DataSourceError(f'data.source={source}: {arg} is not a directory')
    channels = channels or 3
    test_dir = next((os.path.join(arg, d) for d in _TEST_DIRS
                     if _has_class_dirs(os.path.join(arg, d))), None)
    if test_dir is not None and _has_class_dirs(os.path.join(arg, 'train')):
      x, y, class_names = _read_folder(os.path.join(arg, 'train'), size, channels, source)
      tx, ty, test_names = _read_folder(test_dir, size, channels, source)
      if test_names != class_names:
        raise DataSourceError(f'{source}: {test_dir} has classes {list(test_names)}, '
                              f'{arg}/train has {list(class_names)}')
      test = (tx, ty)
    else:
      x, y, class_names = _read_folder(arg, size, channels, source)
      test = None
  else:
    _, parts = _registered(arg)
    x, y = _read_dataset(parts['train'], size, channels, source)
    test = (_read_dataset(parts['test'], size, x.shape[-1], source)
            if 'test' in parts else None)
  if y.min() < 0:
    raise DataSourceError(f'{source}: labels must be integers >= 0, got {int(y.min())}')
  if test is None:
    if len(y) < 4:
      raise DataSourceError(f'{source}: {len(y)} images; at least 4 are needed for the '
                            'train, reward and test splits')
    rest, held = _stratified(np.arange(len(y)), y, test_fraction, TEST_SEED)
    test = (x[held], y[held])
    x, y = x[rest], y[rest]
  train, reward = _stratified(np.arange(len(y)), y, reward_fraction, split_seed)
  parts = {'train': (x[train], y[train]), 'reward': (x[reward], y[reward]),
           'full_train': (x[np.concatenate([train, reward])],
                          y[np.concatenate([train, reward])]),
           'test': test}
  for a, b in parts.values():
    a.flags.writeable = False
    b.flags.writeable = False
  n_classes = int(max(int(y.max()), int(test[1].max())) + 1)
  return {**parts, 'class_names': class_names, 'channels': int(x.shape[-1]),
          'num_classes': max(n_classes, len(class_names))}


def _loaded(cfg) -> dict:
  kind, arg = config.parse_source(cfg.source)
  generation = _registered(arg)[0] if kind == 'python' else 0
  return _load(cfg.source, generation, int(cfg.image_size), cfg.get('channels'),
               float(cfg.get('test_fraction', 0.2)), float(cfg.reward_fraction),
               int(cfg.split_seed))


def label_names(cfg) -> list[str] | None:
  """The class names of a folder source (its subfolders), else None."""
  return [str(n) for n in _loaded(cfg)['class_names']] or None


def arrays(cfg, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 [N, S, S, C], labels int32 [N]) of `split`."""
  config.check_split(split)
  return _loaded(cfg)[split]


def pixel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and std on the 0..255 scale (std floored at 1)."""
  x = images.reshape(-1, images.shape[-1]).astype(np.float64)
  return (tuple(round(float(m), 3) for m in x.mean(0)),
          tuple(round(max(float(s), 1.0), 3) for s in x.std(0)))


def info(cfg) -> config.DatasetInfo:
  loaded = _loaded(cfg)
  sizes = {s: len(loaded[s][1]) for s in config.SPLITS}
  mean, std = pixel_stats(loaded['full_train'][0])
  num_classes = cfg.get('num_classes') or loaded['num_classes']
  if num_classes < loaded['num_classes']:
    raise DataSourceError(f'{cfg.source}: labels go up to {loaded["num_classes"] - 1} but '
                          f'data.num_classes={num_classes}')
  c = loaded['channels']
  return config.DatasetInfo(
      name=cfg.source, image_shape=(cfg.image_size, cfg.image_size, c),
      num_classes=int(num_classes), split_sizes=sizes, mean=mean, std=std,
      class_names=loaded['class_names'])


def cacheable(cfg) -> bool:
  del cfg  # Already in memory.
  return False


def examples(cfg, split: str, *, shard: tuple[int, int] = (0, 1),
             training: bool = False, seed: int | None = None) -> tf.data.Dataset:
  """(uint8 image, int32 label) pairs of part shard[0] of shard[1]."""
  del training, seed  # Order comes from the pipeline's shuffle.
  images, labels = arrays(cfg, split)
  lo, hi = splits.shard_range(0, len(labels), *shard)
  return tf.data.Dataset.from_tensor_slices((images[lo:hi], labels[lo:hi]))
