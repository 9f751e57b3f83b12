"""tfds datasets, offline unless asked otherwise.

The built-in names (CIFAR-10/100, ImageNet-2012) carry published split sizes
and pixel statistics; any other prepared tfds image-classification dataset
(`data.source='tfds:NAME'`) takes them from its metadata (classes, channels,
split sizes; 'test' is its test split, else its validation split) and measures
the pixel mean/std on its first training images.

`tfds.load` on a dataset that is not prepared starts a download and, without
a network, retries for minutes. Here preparedness is checked on local disk
first, so a missing dataset fails in well under a second with the command
that fixes it; downloading happens only with `cfg.download=True`, and even
then missing ImageNet tar files or an unreachable host fail fast.
"""

import dataclasses
import functools
import os
import socket
import urllib.parse

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from aps_tf import errors
from aps_tf.data import config
from aps_tf.data import preprocessing
from aps_tf.data import splits

_PROBE_TIMEOUT_S = 3.0


class DatasetNotPreparedError(errors.UserError, ValueError):
  """A tfds dataset is not on disk and may not, or cannot, be downloaded."""


@dataclasses.dataclass(frozen=True)
class _Spec:
  test_split: str  # held-out split used as 'test' (ImageNet: 'validation')
  num_classes: int
  channels: int
  sizes: tuple[int, int]  # (train, test) before the dataset is prepared
  mean: tuple[float, ...]  # 0..255 scale
  std: tuple[float, ...]
  encoded: bool  # keep JPEG bytes: train crops are decoded window-only
  cacheable: bool  # decoded split fits comfortably in host memory
  manual_files: tuple[str, ...] = ()  # must be in manual_dir to build


SPECS = {
    'cifar10': _Spec('test', 10, 3, (50_000, 10_000), (125.3, 123.0, 113.9),
                     (63.0, 62.1, 66.7), encoded=False, cacheable=True),
    'cifar100': _Spec('test', 100, 3, (50_000, 10_000), (129.3, 124.1, 112.4),
                      (68.2, 65.4, 70.4), encoded=False, cacheable=True),
    'imagenet2012': _Spec(
        'validation', 1000, 3, (1_281_167, 50_000), (123.675, 116.28, 103.53),
        (58.395, 57.12, 57.375), encoded=True, cacheable=False,
        manual_files=('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar')),
}


# Pixel statistics of a tfds dataset without published ones: measured on this
# many of its first training images.
_STATS_EXAMPLES = 2000
_NO_MANUAL = _Spec('test', 0, 3, (0, 0), (), (), encoded=False, cacheable=False)


def tfds_name(cfg) -> str:
  """The tfds name: data.source 'tfds:NAME', else the built-in data.name."""
  source = cfg.get('source') or ''
  return config.parse_source(source)[1] if source else cfg.name


def _builder(cfg) -> tfds.core.DatasetBuilder:
  name = tfds_name(cfg)
  try:
    return tfds.builder(name, data_dir=cfg.data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise DatasetNotPreparedError(
        f'data.source=tfds:{name}: no tfds dataset of that name '
        f'({str(e).splitlines()[0]})') from e


def spec(cfg, b: tfds.core.DatasetBuilder | None = None) -> _Spec:
  """The built-in spec, or one read from a prepared dataset's metadata."""
  name = tfds_name(cfg)
  if name in SPECS:
    return SPECS[name]
  b = b if b is not None and b.is_prepared() else builder(cfg)
  return _derived_spec(name, b)


def _derived_spec(name: str, b: tfds.core.DatasetBuilder) -> _Spec:
  keys = b.info.supervised_keys
  features = b.info.features
  if not keys or len(keys) != 2 or keys[0] not in features or keys[1] not in features:
    raise DatasetNotPreparedError(
        f'data.source=tfds:{name}: not an image-classification dataset (supervised '
        f'keys {keys}; expected (image, label))')
  image, label = features[keys[0]], features[keys[1]]
  shape = tuple(getattr(image, 'shape', ()) or ())
  num_classes = getattr(label, 'num_classes', None)
  if len(shape) != 3 or not num_classes:
    raise DatasetNotPreparedError(
        f'data.source=tfds:{name}: expected images [H, W, C] and a ClassLabel, got '
        f'{type(image).__name__} {shape} and {type(label).__name__}')
  split_names = set(b.info.splits.keys())
  test = next((s for s in ('test', 'validation') if s in split_names), None)
  if 'train' not in split_names or test is None:
    raise DatasetNotPreparedError(
        f'data.source=tfds:{name}: needs a train split and a test or validation '
        f'split, has {sorted(split_names)}')
  sizes = (b.info.splits['train'].num_examples, b.info.splits[test].num_examples)
  static = all(d is not None for d in shape)
  nbytes = sizes[0] * (int(np.prod(shape)) if static else 0)
  return _Spec(test, int(num_classes), int(shape[-1] or 3), sizes, (), (),
               encoded=False, cacheable=static and nbytes < 2e9)


@functools.lru_cache(maxsize=8)
def _measured_stats(name: str, data_dir: str | None, size: int):
  b = tfds.builder(name, data_dir=data_dir)
  n = min(_STATS_EXAMPLES, b.info.splits['train'].num_examples)
  ds = b.as_dataset(split=f'train[0:{n}]', as_supervised=True, shuffle_files=False)
  ds = ds.map(
      lambda x, _: preprocessing.resize(tf.cast(x, tf.float32), size))
  total, total_sq, n = 0.0, 0.0, 0
  for x in ds.batch(256).as_numpy_iterator():
    x = x.reshape(-1, x.shape[-1]).astype(np.float64)
    total, total_sq, n = total + x.sum(0), total_sq + (x * x).sum(0), n + len(x)
  mean = total / max(n, 1)
  std = np.sqrt(np.maximum(total_sq / max(n, 1) - mean * mean, 1.0))
  return (tuple(round(float(m), 3) for m in mean),
          tuple(round(float(s), 3) for s in std))


def pixel_stats(cfg) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std) on the 0..255 scale: published, or measured."""
  s = spec(cfg)
  if s.mean:
    return s.mean, s.std
  return _measured_stats(tfds_name(cfg), cfg.data_dir, int(cfg.image_size))


def _manual_dir(cfg, b: tfds.core.DatasetBuilder) -> str:
  return cfg.manual_dir or os.path.join(b.data_dir_root, 'downloads', 'manual')


def _not_prepared_message(cfg, b: tfds.core.DatasetBuilder) -> str:
  name = tfds_name(cfg)
  spec = SPECS.get(name, _NO_MANUAL)
  command = f'tfds build {name} --data_dir={b.data_dir_root}'
  manual = ''
  if spec.manual_files:
    command += f' --manual_dir={_manual_dir(cfg, b)}'
    manual = (f' The manual_dir must hold {" and ".join(spec.manual_files)}'
              ' (from image-net.org).')
  data_dir = str(b.data_dir_root)
  return (f'tfds dataset {name!r} is not prepared in data_dir '
          f'{data_dir!r} (looked for {b.data_path}) and downloading is off '
          f'(download=False). Prepare it once with:\n  {command}\n'
          f'or set download=True.{manual}')


def _check_can_download(cfg, b: tfds.core.DatasetBuilder) -> None:
  """Fails fast where tfds would fail late or retry for minutes."""
  name = tfds_name(cfg)
  spec = SPECS.get(name, _NO_MANUAL)
  manual_dir = _manual_dir(cfg, b)
  missing = [f for f in spec.manual_files
             if not tf.io.gfile.exists(os.path.join(manual_dir, f))]
  if missing:
    command = (f'tfds build {name} --data_dir={b.data_dir_root} '
               f'--manual_dir={manual_dir}')
    raise DatasetNotPreparedError(
        f'Cannot build tfds dataset {name!r}: {", ".join(missing)} not '
        f'found in manual_dir {manual_dir!r}. Download them from '
        f'image-net.org, then run:\n  {command}')
  if spec.manual_files or any(
      os.environ.get(v) for v in ('https_proxy', 'HTTPS_PROXY', 'all_proxy')):
    return  # Nothing to fetch, or the proxy decides reachability.
  for url in b.url_infos or {}:
    host = urllib.parse.urlparse(url).hostname
    try:
      socket.create_connection((host, 443), timeout=_PROBE_TIMEOUT_S).close()
    except OSError as e:
      raise DatasetNotPreparedError(
          f'Cannot download tfds dataset {name!r}: {host} is unreachable '
          f'({e}). Build it where there is a network with\n  tfds build '
          f'{name} --data_dir=DIR\nand copy DIR/{name} into '
          f'{b.data_dir_root}.') from e


def builder(cfg) -> tfds.core.DatasetBuilder:
  """The prepared builder of the dataset; prepares it only if cfg.download."""
  b = _builder(cfg)
  if b.is_prepared():
    return b
  if not cfg.download:
    raise DatasetNotPreparedError(_not_prepared_message(cfg, b))
  _check_can_download(cfg, b)
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=_manual_dir(cfg, b)))
  return b


def check_prepared(cfg) -> None:
  """Fails before a run starts if its dataset is neither on disk nor downloadable.

  Args:
    cfg: the `data` section of a config.

  Raises:
    DatasetNotPreparedError: the message gives the command that prepares it.
  """
  if cfg.name == "digits":
    return  # embedded: always there
  level = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # tfds warns about every folder it probes
  try:
    builder(cfg)
  finally:
    logging.set_verbosity(level)


def _source_sizes(cfg, b: tfds.core.DatasetBuilder | None) -> tuple[int, int]:
  if b is None or not b.is_prepared():
    return spec(cfg).sizes  # published sizes (built-in names only)
  return (b.info.splits['train'].num_examples,
          b.info.splits[spec(cfg, b).test_split].num_examples)


def info(cfg) -> config.DatasetInfo:
  """Sizes from the prepared dataset's metadata, else the published ones."""
  b = _builder(cfg)
  s = spec(cfg, b)
  n_train, n_test = _source_sizes(cfg, b)
  mean, std = pixel_stats(cfg)
  return config.DatasetInfo(
      name=config.display_name(cfg),
      image_shape=(cfg.image_size, cfg.image_size, s.channels),
      num_classes=max(s.num_classes, cfg.get('num_classes') or 0),
      split_sizes=splits.split_sizes(n_train, n_test, cfg.reward_fraction),
      mean=mean, std=std)


def cacheable(cfg) -> bool:
  return spec(cfg).cacheable


def label_names(cfg) -> list[str] | None:
  """The class names in label order, from tfds' metadata (None if it has none)."""
  try:
    names = tfds.builder(tfds_name(cfg), data_dir=cfg.data_dir).info.features['label'].names
  except Exception:  # pylint: disable=broad-except
    return None
  return [str(n) for n in names] if names else None


def tfds_split(cfg, split: str, shard: tuple[int, int],
               b: tfds.core.DatasetBuilder | None = None) -> str:
  """The tfds slice, e.g. 'train[0:25000]', of one shard of a search split."""
  source, lo, hi = splits.split_range(split, *_source_sizes(cfg, b),
                                      cfg.reward_fraction)
  lo, hi = splits.shard_range(lo, hi, *shard)
  name = spec(cfg, b).test_split if source == 'test' else source
  return f'{name}[{lo}:{hi}]'


def examples(cfg, split: str, *, shard: tuple[int, int] = (0, 1),
             training: bool = False, seed: int | None = None
             ) -> tf.data.Dataset:
  """(image, int32 label) pairs; image is uint8 [H, W, C] or JPEG bytes."""
  b = builder(cfg)
  decoders = ({'image': tfds.decode.SkipDecoding()}
              if spec(cfg, b).encoded else None)
  ds = b.as_dataset(
      split=tfds_split(cfg, split, shard, b), shuffle_files=training,
      as_supervised=True, decoders=decoders,
      read_config=tfds.ReadConfig(try_autocache=False, shuffle_seed=seed,
                                  skip_prefetch=True))
  return ds.map(lambda x, y: (x, tf.cast(y, tf.int32)),
                num_parallel_calls=tf.data.AUTOTUNE)
