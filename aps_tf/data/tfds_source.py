"""tfds datasets (CIFAR-10/100, ImageNet-2012), offline unless asked otherwise.

`tfds.load` on a dataset that is not prepared starts a download and, without
a network, retries for minutes. Here preparedness is checked on local disk
first, so a missing dataset fails in well under a second with the command
that fixes it; downloading happens only with `cfg.download=True`, and even
then missing ImageNet tar files or an unreachable host fail fast.
"""

import dataclasses
import os
import socket
import urllib.parse

from absl import logging
import tensorflow as tf
import tensorflow_datasets as tfds

from aps_tf import errors
from aps_tf.data import config
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


def _manual_dir(cfg, b: tfds.core.DatasetBuilder) -> str:
  return cfg.manual_dir or os.path.join(b.data_dir_root, 'downloads', 'manual')


def _not_prepared_message(cfg, b: tfds.core.DatasetBuilder) -> str:
  spec = SPECS[cfg.name]
  command = f'tfds build {cfg.name} --data_dir={b.data_dir_root}'
  manual = ''
  if spec.manual_files:
    command += f' --manual_dir={_manual_dir(cfg, b)}'
    manual = (f' The manual_dir must hold {" and ".join(spec.manual_files)}'
              ' (from image-net.org).')
  data_dir = str(b.data_dir_root)
  return (f'tfds dataset {cfg.name!r} is not prepared in data_dir '
          f'{data_dir!r} (looked for {b.data_path}) and downloading is off '
          f'(download=False). Prepare it once with:\n  {command}\n'
          f'or set download=True.{manual}')


def _check_can_download(cfg, b: tfds.core.DatasetBuilder) -> None:
  """Fails fast where tfds would fail late or retry for minutes."""
  spec = SPECS[cfg.name]
  manual_dir = _manual_dir(cfg, b)
  missing = [f for f in spec.manual_files
             if not tf.io.gfile.exists(os.path.join(manual_dir, f))]
  if missing:
    command = (f'tfds build {cfg.name} --data_dir={b.data_dir_root} '
               f'--manual_dir={manual_dir}')
    raise DatasetNotPreparedError(
        f'Cannot build tfds dataset {cfg.name!r}: {", ".join(missing)} not '
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
          f'Cannot download tfds dataset {cfg.name!r}: {host} is unreachable '
          f'({e}). Build it where there is a network with\n  tfds build '
          f'{cfg.name} --data_dir=DIR\nand copy DIR/{cfg.name} into '
          f'{b.data_dir_root}.') from e


def builder(cfg) -> tfds.core.DatasetBuilder:
  """The prepared builder of cfg.name; prepares it only if cfg.download."""
  b = tfds.builder(cfg.name, data_dir=cfg.data_dir)
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
  spec = SPECS[cfg.name]
  if b is None or not b.is_prepared():
    return spec.sizes
  return (b.info.splits['train'].num_examples,
          b.info.splits[spec.test_split].num_examples)


def info(cfg) -> config.DatasetInfo:
  """Sizes from the prepared dataset's metadata, else the published ones."""
  spec = SPECS[cfg.name]
  n_train, n_test = _source_sizes(cfg, tfds.builder(cfg.name,
                                                    data_dir=cfg.data_dir))
  return config.DatasetInfo(
      name=cfg.name,
      image_shape=(cfg.image_size, cfg.image_size, spec.channels),
      num_classes=spec.num_classes,
      split_sizes=splits.split_sizes(n_train, n_test, cfg.reward_fraction),
      mean=spec.mean, std=spec.std)


def cacheable(cfg) -> bool:
  return SPECS[cfg.name].cacheable


def tfds_split(cfg, split: str, shard: tuple[int, int],
               b: tfds.core.DatasetBuilder | None = None) -> str:
  """The tfds slice, e.g. 'train[0:25000]', of one shard of a search split."""
  source, lo, hi = splits.split_range(split, *_source_sizes(cfg, b),
                                      cfg.reward_fraction)
  lo, hi = splits.shard_range(lo, hi, *shard)
  name = SPECS[cfg.name].test_split if source == 'test' else source
  return f'{name}[{lo}:{hi}]'


def examples(cfg, split: str, *, shard: tuple[int, int] = (0, 1),
             training: bool = False, seed: int | None = None
             ) -> tf.data.Dataset:
  """(image, int32 label) pairs; image is uint8 [H, W, C] or JPEG bytes."""
  b = builder(cfg)
  decoders = ({'image': tfds.decode.SkipDecoding()}
              if SPECS[cfg.name].encoded else None)
  ds = b.as_dataset(
      split=tfds_split(cfg, split, shard, b), shuffle_files=training,
      as_supervised=True, decoders=decoders,
      read_config=tfds.ReadConfig(try_autocache=False, shuffle_seed=seed,
                                  skip_prefetch=True))
  return ds.map(lambda x, y: (x, tf.cast(y, tf.int32)),
                num_parallel_calls=tf.data.AUTOTUNE)
