r"""Input pipeline throughput (images/s) on this machine.

CIFAR and ImageNet use synthetic data of the real shapes (random uint8
32x32x3 images; JPEG-encoded 375x500 images) fed through the same shuffle/
augment/batch tail and preprocessing recipe as `build_dataset`; 'digits' is
the real embedded pipeline. Usage:

  python benchmarks/input_pipeline.py --json
  python benchmarks/input_pipeline.py --pipelines=cifar10_train --batch_size=256
"""

import json
import os
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from aps_tf import cli
from aps_tf import data
from aps_tf.data import pipeline
from aps_tf.data import recipes

PIPELINES = ('cifar10_train', 'cifar10_eval', 'digits_train', 'imagenet_train',
             'imagenet_eval')

_PIPELINES = flags.DEFINE_list('pipelines', list(PIPELINES),
                               f'Which of {PIPELINES} to time.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 128, 'Global batch size.')
_IMAGENET_BATCH_SIZE = flags.DEFINE_integer('imagenet_batch_size', 32,
                                            'Batch size of the ImageNet runs.')
_SECONDS = flags.DEFINE_float('seconds', 5.0, 'Timed seconds per pipeline.')
_WARMUP = flags.DEFINE_integer('warmup_batches', 5, 'Untimed first batches.')
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object only.')


def _synthetic_cifar(n: int = 10_000) -> tf.data.Dataset:
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, 32, 32, 3), np.uint8)
  labels = rng.integers(0, 10, (n,), np.int32)
  return tf.data.Dataset.from_tensor_slices((images, labels)).cache()


def _synthetic_imagenet(n: int = 64) -> tf.data.Dataset:
  """Smooth 375x500 images, so JPEG sizes (~30-60 KB) resemble real ones."""
  rng = np.random.default_rng(0)
  small = rng.integers(0, 256, (n, 24, 32, 3), np.uint8)
  big = tf.cast(tf.image.resize(small, [375, 500]), tf.uint8)
  encoded = [tf.io.encode_jpeg(x, quality=90).numpy() for x in big]
  labels = rng.integers(0, 1000, (n,), np.int32)
  return tf.data.Dataset.from_tensor_slices((encoded, labels)).cache()


def _dataset(name: str) -> tuple[tf.data.Dataset, int]:
  family, mode = name.rsplit('_', 1)
  training = mode == 'train'
  if family == 'digits':
    cfg = data.default_config('digits')
    split = 'train' if training else 'test'
    return data.build_dataset(cfg, split, _BATCH_SIZE.value,
                              training=training, seed=0), _BATCH_SIZE.value
  if family == 'cifar10':
    cfg, source, batch = (data.default_config('cifar10'), _synthetic_cifar(),
                          _BATCH_SIZE.value)
  else:
    cfg, source, batch = (data.default_config('imagenet2012'),
                          _synthetic_imagenet(), _IMAGENET_BATCH_SIZE.value)
  ds = pipeline.make_pipeline(
      source, recipes.get(cfg), batch, training=training, seed=0,
      shuffle_buffer=cfg.shuffle_buffer, repeat=True, drop_remainder=True,
      deterministic=False)
  return ds, batch


def _time(ds: tf.data.Dataset, batch_size: int) -> dict[str, float]:
  it = iter(ds)
  for _ in range(_WARMUP.value):
    next(it)
  batches, start = 0, time.perf_counter()
  while time.perf_counter() - start < _SECONDS.value:
    next(it)
    batches += 1
  seconds = time.perf_counter() - start
  return {'images_per_s': round(batches * batch_size / seconds, 1),
          'batch_size': batch_size, 'batches': batches,
          'seconds': round(seconds, 2)}


def main(argv):
  del argv
  unknown = set(_PIPELINES.value) - set(PIPELINES)
  if unknown:
    raise app.UsageError(f'Unknown pipelines {sorted(unknown)}; '
                         f'allowed: {PIPELINES}.')
  results = {'tf_version': tf.__version__, 'cpu_count': os.cpu_count(),
             'pipelines': {}}
  for name in _PIPELINES.value:
    results['pipelines'][name] = _time(*_dataset(name))
    if not _JSON.value:
      print(f'{name:>16}: {results["pipelines"][name]["images_per_s"]:>10.1f}'
            ' images/s')
  if _JSON.value:
    print(json.dumps(results))


if __name__ == '__main__':
  cli.run(main)
