"""Tests of aps_tf.data: the real pipelines on the embedded digits and on
tfds mock data (metadata written to a temporary data_dir, records generated
per requested slice so split and shard boundaries are observable)."""

import dataclasses
import functools
import hashlib
import os
import re
import socket
import tempfile
import time
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from aps_tf import data
from aps_tf.data import digits
from aps_tf.data import preprocessing as pp
from aps_tf.data import recipes
from aps_tf.data import tfds_source

_MOCK_SIZES = {'cifar10': {'train': 40, 'test': 12},
               'imagenet2012': {'train': 12, 'validation': 4}}


def _write_metadata(data_dir, name, sizes):
  """A 'prepared' dataset without records: dataset_info.json + features.json."""
  b = tfds.builder(name, data_dir=data_dir)
  b.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0)
      for s, n in sizes.items()]))
  b.data_path.mkdir(parents=True, exist_ok=True)
  b.info.write_to_directory(b.data_path)


def _fake_example(name, split, i):
  """Example i of a split: a unique random image, label i % classes."""
  rng = np.random.default_rng([0 if split == 'train' else 1, i])
  if name == 'imagenet2012':
    shape = (40 + 8 * (i % 3), 56 - 8 * (i % 2), 3)
    return {'image': rng.integers(0, 256, shape, np.uint8),
            'label': i % 1000, 'file_name': f'{split}_{i}.JPEG'}
  return {'image': rng.integers(0, 256, (32, 32, 3), np.uint8),
          'label': i % 10, 'id': f'{split}_{i}'}


@functools.lru_cache(maxsize=None)
def _encoded_examples(builder_name, split, lo, hi, features):
  examples = [features.encode_example(_fake_example(builder_name, split, i))
              for i in range(lo, hi)]
  return {k: [ex[k] for ex in examples] for k in examples[0]}


def _fake_as_dataset(self, split, decoders=None, read_config=None,
                     shuffle_files=False):
  """Serves records [lo, hi) of 'name[lo:hi]', decoded the way tfds does."""
  del read_config, shuffle_files
  name, lo, hi = re.fullmatch(r'(\w+)\[(\d+):(\d+)\]', split).groups()
  columns = _encoded_examples(self.name, name, int(lo), int(hi),
                              self.info.features)
  ds = tf.data.Dataset.from_tensor_slices(columns)
  return ds.map(functools.partial(self.info.features.decode_example,
                                  decoders=decoders))


def _tempdir(test):
  """absltest's create_tempdir needs parsed flags, which pytest does not do."""
  return test.enter_context(tempfile.TemporaryDirectory())


def _hashes(images):
  return [hashlib.sha1(x.tobytes()).hexdigest() for x in images]


def _first_batches(ds, n):
  """The next n batches as numpy, of a dataset or a live iterator."""
  it = iter(ds)
  return [tuple(t.numpy() for t in next(it)) for _ in range(n)]


def _offset(aug, orig, pad, pad_value=None, allow_flip=False):
  """(dy, dx, flipped) such that aug is that crop of padded orig, else None."""
  pad_width = ((pad, pad), (pad, pad), (0, 0))
  padded = (np.pad(orig, pad_width, mode='reflect') if pad_value is None else
            np.pad(orig, pad_width, constant_values=pad_value))
  h, w = orig.shape[:2]
  for flipped in (False, True) if allow_flip else (False,):
    p = padded[:, ::-1] if flipped else padded
    for dy in range(2 * pad + 1):
      for dx in range(2 * pad + 1):
        if np.allclose(p[dy:dy + h, dx:dx + w], aug, atol=1e-5):
          return dy, dx, flipped
  return None


def _with(cfg, **overrides):
  cfg = cfg.copy_and_resolve_references()
  cfg.update(overrides)
  return cfg


class ConfigTest(parameterized.TestCase):

  @parameterized.parameters(('digits', 16), ('cifar10', 32), ('cifar100', 32),
                            ('imagenet2012', 224))
  def test_defaults(self, name, size):
    cfg = data.default_config(name)
    self.assertEqual(cfg.name, name)
    self.assertEqual(cfg.image_size, size)
    self.assertIsNone(cfg.data_dir)
    self.assertFalse(cfg.download)
    self.assertEqual(cfg.reward_fraction, 0.5)
    cfg.data_dir = '/some/dir'  # Placeholders take strings later.

  def test_unknown_dataset(self):
    with self.assertRaisesRegex(ValueError, r"'mnist'.*cifar10"):
      data.default_config('mnist')
    cfg = data.default_config()
    cfg.name = 'mnist'
    with self.assertRaisesRegex(ValueError, r"'mnist'.*digits"):
      data.dataset_info(cfg)

  def test_unknown_split(self):
    with self.assertRaisesRegex(ValueError, r"'validation'.*reward"):
      data.build_dataset(data.default_config(), 'validation', 8,
                         training=False)
    with self.assertRaisesRegex(ValueError, r"'val'.*full_train"):
      data.raw_images(data.default_config(), 'val', 4)

  @parameterized.parameters(0.0, 1.0, -0.1)
  def test_bad_reward_fraction(self, fraction):
    cfg = data.default_config()
    cfg.reward_fraction = fraction
    with self.assertRaisesRegex(ValueError, 'reward_fraction'):
      data.dataset_info(cfg)


class DigitsTest(parameterized.TestCase):

  def test_info_and_split_sizes(self):
    info = data.dataset_info(data.default_config())
    self.assertEqual(info.image_shape, (16, 16, 1))
    self.assertEqual(info.num_classes, 10)
    s = info.split_sizes
    self.assertEqual(s['train'] + s['reward'] + s['test'], 1797)
    self.assertEqual(s['full_train'], s['train'] + s['reward'])
    self.assertEqual(s['test'], 360)
    self.assertAlmostEqual(s['reward'] / s['full_train'], 0.5, delta=0.01)

  def test_arrays_are_real_digits(self):
    cfg = data.default_config()
    for split in data.SPLITS:
      images, labels = digits.arrays(cfg, split)
      self.assertEqual(images.dtype, np.uint8)
      self.assertEqual(labels.dtype, np.int32)
      self.assertEqual(images.shape[1:], (16, 16, 1))
      self.assertEqual(set(labels.tolist()), set(range(10)))
      self.assertGreater(images.max(), 200)  # 0..255, not sklearn's 0..16
      self.assertEqual(images.min(), 0)

  def test_splits_disjoint_and_complete(self):
    cfg = data.default_config()
    h = {s: _hashes(data.raw_images(cfg, s, 2000)) for s in data.SPLITS}
    for s in data.SPLITS:
      self.assertLen(set(h[s]), len(h[s]))
    self.assertEmpty(set(h['train']) & set(h['reward']))
    self.assertEmpty(set(h['full_train']) & set(h['test']))
    self.assertEqual(set(h['train']) | set(h['reward']), set(h['full_train']))
    self.assertLen(h['full_train'] + h['test'], 1797)

  def test_split_seed_moves_train_reward_but_not_test(self):
    a, b = data.default_config(), data.default_config()
    b.split_seed, b.reward_fraction = 7, 0.3
    self.assertEqual(_hashes(data.raw_images(a, 'test', 400)),
                     _hashes(data.raw_images(b, 'test', 400)))
    self.assertNotEqual(set(_hashes(data.raw_images(a, 'reward', 1000))),
                        set(_hashes(data.raw_images(b, 'reward', 1000))))
    self.assertEqual(data.dataset_info(b).split_sizes['reward'], 432)

  @parameterized.parameters(8, 16, 32)
  def test_batches(self, size):
    cfg = data.default_config()
    cfg.image_size = size
    x, y = next(iter(data.build_dataset(cfg, 'train', 32, training=True,
                                        seed=0)))
    self.assertEqual(x.shape, (32, size, size, 1))
    self.assertEqual(x.dtype, tf.float32)
    self.assertEqual(y.dtype, tf.int32)
    self.assertTrue(np.all((y.numpy() >= 0) & (y.numpy() < 10)))
    lo, hi = (0 - 77.85) / 95.85, (255 - 77.85) / 95.85
    self.assertBetween(float(tf.reduce_min(x)), lo - 1e-5, hi)
    self.assertBetween(float(tf.reduce_max(x)), lo, hi + 1e-5)

  def test_eval_pass_covers_split_once(self):
    ds = data.build_dataset(data.default_config(), 'test', 64, training=False,
                            repeat=False, drop_remainder=False)
    labels = np.concatenate([y.numpy() for _, y in ds])
    _, expected = digits.arrays(data.default_config(), 'test')
    np.testing.assert_array_equal(labels, expected)

  def test_same_seed_same_stream(self):
    cfg = data.default_config()
    make = lambda seed: _first_batches(
        data.build_dataset(cfg, 'train', 64, training=True, seed=seed), 3)
    a, b, c = make(3), make(3), make(4)
    for (xa, ya), (xb, yb) in zip(a, b):
      np.testing.assert_array_equal(xa, xb)
      np.testing.assert_array_equal(ya, yb)
    self.assertFalse(np.array_equal(a[0][0], c[0][0]))

  def test_eval_deterministic_and_matches_serving(self):
    cfg = data.default_config()
    ds = data.build_dataset(cfg, 'reward', 16, training=False)
    x1, x2 = next(iter(ds))[0], next(iter(ds))[0]
    np.testing.assert_array_equal(x1, x2)
    raw = data.raw_images(cfg, 'reward', 16)
    serve = tf.function(
        lambda im: data.serving_preprocess(cfg, im),
        input_signature=[tf.TensorSpec([None, 16, 16, 1], tf.uint8)])
    np.testing.assert_array_equal(serve(raw), x1)

  def test_iterator_checkpoint_resumes_position(self):
    cfg = data.default_config()
    make = lambda: iter(data.build_dataset(cfg, 'train', 32, training=True,
                                           seed=0))
    it = make()
    for _ in range(25):  # Past the first epoch of 718 examples.
      next(it)
    path = tf.train.Checkpoint(it=it).write(os.path.join(_tempdir(self), 'c'))
    expected = _first_batches(it, 2)
    resumed = make()
    tf.train.Checkpoint(it=resumed).read(path).assert_consumed()
    for (xa, ya), (xb, yb) in zip(expected, _first_batches(resumed, 2)):
      np.testing.assert_array_equal(xa, xb)
      np.testing.assert_array_equal(ya, yb)

  @parameterized.product(training=[True, False], replicas=[1, 2])
  def test_skip_batches_continues_the_stream(self, training, replicas):
    # What a resumed run without iterator state reads: past an epoch
    # boundary (718 examples), the same batches as the unskipped pipeline.
    cfg = data.default_config()
    ctx = (tf.distribute.InputContext(1, 0, replicas) if replicas > 1 else None)
    make = lambda skip: data.build_dataset(cfg, 'train', 64, training=training, seed=1,
                                           input_context=ctx, skip_batches=skip)
    expected = _first_batches(make(0), 27)[25:]
    for (xa, ya), (xb, yb) in zip(expected, _first_batches(make(25), 2)):
      np.testing.assert_array_equal(xa, xb)
      np.testing.assert_array_equal(ya, yb)

  @parameterized.parameters(True, False)
  def test_skipped_batches_are_not_decoded_or_augmented(self, training):
    # Every element that reaches the map is counted: skipping 1,000 batches
    # of 64 must map about one batch (plus what prefetching reads ahead),
    # not 64,000 elements.
    cfg = data.default_config()
    calls = []
    real = recipes.get(cfg)

    def counted(fn):
      def wrapped(*args):
        tf.py_function(lambda: calls.append(1) or 0, [], tf.int32)
        return fn(*args)
      return wrapped

    recipe = dataclasses.replace(real, train=counted(real.train), decode=counted(real.decode))
    with mock.patch.object(recipes, 'get', return_value=recipe):
      ds = data.build_dataset(cfg, 'train', 64, training=training, seed=1,
                              skip_batches=1000)
      _first_batches(ds, 1)
    self.assertBetween(len(calls), 64, 64 * 50)

  def test_augmentation_is_a_zero_padded_shift(self):
    cfg = data.default_config()
    make = lambda augment: data.build_dataset(
        _with(cfg, augment=augment), 'train', 32, training=True, seed=5)
    (xa, ya), = _first_batches(make(True), 1)
    (xo, yo), = _first_batches(make(False), 1)
    np.testing.assert_array_equal(ya, yo)  # Same seed, same order.
    offsets = [_offset(a, o, pad=2, pad_value=-77.85 / 95.85)
               for a, o in zip(xa, xo)]
    self.assertNotIn(None, offsets)
    self.assertGreater(len(set(offsets)), 3)
    self.assertTrue(any(o != (2, 2, False) for o in offsets))


class TfdsMockTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = cls.enterClassContext(tempfile.TemporaryDirectory())
    for name, sizes in _MOCK_SIZES.items():
      _write_metadata(cls.data_dir, name, sizes)

  def setUp(self):
    super().setUp()
    self.enter_context(tfds.testing.mock_data(
        data_dir=self.data_dir, policy=tfds.testing.MockPolicy.USE_FILES,
        as_dataset_fn=_fake_as_dataset))

  def cfg(self, name='cifar10', **overrides):
    cfg = data.default_config(name)
    cfg.data_dir = self.data_dir
    cfg.update(overrides)
    return cfg

  def test_info_uses_prepared_metadata(self):
    info = data.dataset_info(self.cfg())
    self.assertEqual(info.split_sizes,
                     {'train': 20, 'reward': 20, 'full_train': 40, 'test': 12})
    self.assertEqual(info.image_shape, (32, 32, 3))
    info = data.dataset_info(self.cfg(reward_fraction=0.25))
    self.assertEqual(info.split_sizes['reward'], 10)

  def test_tfds_slices(self):
    cfg = self.cfg()
    self.assertEqual(tfds_source.tfds_split(cfg, 'train', (0, 1)),
                     'train[0:25000]')
    self.assertEqual(tfds_source.tfds_split(cfg, 'reward', (1, 2)),
                     'train[37500:50000]')
    cfg = self.cfg('imagenet2012')
    self.assertEqual(tfds_source.tfds_split(cfg, 'test', (0, 1)),
                     'validation[0:50000]')

  def test_splits_disjoint_and_complete(self):
    cfg = self.cfg()
    sizes = data.dataset_info(cfg).split_sizes
    h = {}
    for s in data.SPLITS:
      raw = data.raw_images(cfg, s, 1000)
      self.assertEqual(raw.shape, (sizes[s], 32, 32, 3))
      self.assertEqual(raw.dtype, np.uint8)
      h[s] = set(_hashes(raw))
      self.assertLen(h[s], sizes[s])
    self.assertEmpty(h['train'] & h['reward'])
    self.assertEqual(h['train'] | h['reward'], h['full_train'])
    self.assertEmpty(h['full_train'] & h['test'])

  def test_train_batches_and_determinism(self):
    cfg = self.cfg()
    make = lambda seed: _first_batches(
        data.build_dataset(cfg, 'train', 8, training=True, seed=seed), 4)
    a, b, c = make(1), make(1), make(2)
    self.assertEqual(a[0][0].shape, (8, 32, 32, 3))
    self.assertEqual(a[0][0].dtype, np.float32)
    self.assertEqual(a[0][1].dtype, np.int32)
    for (xa, ya), (xb, yb) in zip(a, b):
      np.testing.assert_array_equal(xa, xb)
      np.testing.assert_array_equal(ya, yb)
    self.assertFalse(np.array_equal(a[0][0], c[0][0]))

  def test_eval_matches_serving(self):
    cfg = self.cfg()
    x, y = next(iter(data.build_dataset(cfg, 'test', 12, training=False)))
    raw = data.raw_images(cfg, 'test', 12)
    np.testing.assert_array_equal(data.serving_preprocess(cfg, raw), x)
    np.testing.assert_array_equal(y, np.arange(12) % 10)

  def test_augmentation_reflect_pad_crop_flip(self):
    make = lambda augment: data.build_dataset(
        self.cfg(augment=augment), 'full_train', 40, training=True, seed=9)
    (xa, ya), = _first_batches(make(True), 1)
    (xo, yo), = _first_batches(make(False), 1)
    np.testing.assert_array_equal(ya, yo)
    offsets = [_offset(a, o, pad=4, allow_flip=True) for a, o in zip(xa, xo)]
    self.assertNotIn(None, offsets)
    self.assertTrue(any(o[:2] != (4, 4) for o in offsets))
    self.assertTrue(any(o[2] for o in offsets))
    self.assertFalse(all(o[2] for o in offsets))

  @parameterized.parameters('cifar10', 'digits')
  def test_two_input_pipelines_see_disjoint_data(self, name):
    cfg = self.cfg(name)
    seen = []
    for i in range(2):
      ctx = tf.distribute.InputContext(num_input_pipelines=2,
                                       input_pipeline_id=i,
                                       num_replicas_in_sync=2)
      ds = data.build_dataset(cfg, 'full_train', 8, training=False,
                              input_context=ctx, repeat=False,
                              drop_remainder=False)
      batches = [x.numpy() for x, _ in ds]
      self.assertEqual(batches[0].shape[0], 4)  # per-replica batch
      seen.append(set(_hashes(np.concatenate(batches))))
    self.assertEmpty(seen[0] & seen[1])
    self.assertLen(seen[0] | seen[1],
                   data.dataset_info(cfg).split_sizes['full_train'])

  def test_distribute_datasets_from_function(self):
    cfg = self.cfg()
    strategy = tf.distribute.MirroredStrategy(['/cpu:0'])
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: data.build_dataset(cfg, 'train', 8, training=True, seed=0,
                                       input_context=ctx))
    x, y = next(iter(dist))
    self.assertEqual(x.shape, (8, 32, 32, 3))
    self.assertEqual(y.shape, (8,))

  def test_imagenet_pipelines(self):
    cfg = self.cfg('imagenet2012')
    x, y = next(iter(data.build_dataset(cfg, 'train', 4, training=True,
                                        seed=0)))
    self.assertEqual(x.shape, (4, 224, 224, 3))
    self.assertTrue(np.all(np.isfinite(x)))
    x2, _ = next(iter(data.build_dataset(cfg, 'train', 4, training=True,
                                         seed=1)))
    self.assertFalse(np.array_equal(x, x2))
    ev = data.build_dataset(cfg, 'test', 4, training=False)
    e1, e2 = next(iter(ev))[0], next(iter(ev))[0]
    self.assertEqual(e1.shape, (4, 224, 224, 3))
    np.testing.assert_array_equal(e1, e2)
    # Eval path == serving on the decoded images (tfds decodes JPEG itself).
    decoded = tfds.load('imagenet2012', split='validation[0:1]',
                        data_dir=self.data_dir, as_supervised=True)
    image = next(iter(decoded))[0]
    np.testing.assert_allclose(data.serving_preprocess(cfg, image[None])[0],
                               e1[0], atol=1e-4)
    raw = data.raw_images(cfg, 'test', 3)
    self.assertEqual(raw.shape, (3, 256, 256, 3))
    self.assertEqual(raw.dtype, np.uint8)
    self.assertEqual(data.serving_preprocess(cfg, raw).shape, (3, 224, 224, 3))


class TfdsRandomMockTest(parameterized.TestCase):
  """tfds's own random JPEG mock, to not only trust our fake records."""

  def test_imagenet_on_tfds_mock(self):
    data_dir = _tempdir(self)
    _write_metadata(data_dir, 'imagenet2012', _MOCK_SIZES['imagenet2012'])
    cfg = data.default_config('imagenet2012')
    cfg.image_size = 64
    with tfds.testing.mock_data(num_examples=4, data_dir=data_dir,
                                policy=tfds.testing.MockPolicy.USE_FILES):
      x, y = next(iter(data.build_dataset(cfg, 'train', 4, training=True)))
      e, _ = next(iter(data.build_dataset(cfg, 'test', 4, training=False)))
    self.assertEqual(x.shape, (4, 64, 64, 3))
    self.assertEqual(e.shape, (4, 64, 64, 3))
    self.assertEqual(y.dtype, tf.int32)
    self.assertTrue(np.all(np.isfinite(x)) and np.all(np.isfinite(e)))


class PreprocessingTest(parameterized.TestCase):

  def test_random_resized_crop_shapes_and_variety(self):
    image = tf.io.encode_jpeg(
        tf.constant(np.random.default_rng(0).integers(0, 256, (60, 90, 3)),
                    tf.uint8))
    crops = [pp.random_resized_crop_jpeg(image, 24, tf.constant([s, 0]))
             for s in range(4)]
    for c in crops:
      self.assertEqual(c.shape, (24, 24, 3))
    self.assertFalse(np.array_equal(crops[0], crops[1]))

  @parameterized.parameters(((300, 400), (224, 224)), ((256, 256), (224, 224)),
                            ((500, 240), (224, 224)))
  def test_resize_shorter_center_crop(self, hw, out):
    images = tf.zeros((2, *hw, 3), tf.uint8)
    self.assertEqual(pp.resize_shorter_center_crop(images, 256, 224).shape,
                     (2, *out, 3))

  def test_center_crop_is_centred(self):
    image = np.zeros((256, 256, 1), np.float32)
    image[16:240, 16:240] = 1.0  # The central 224 square.
    out = pp.resize_shorter_center_crop(tf.constant(image), 256, 224)
    self.assertEqual(float(tf.reduce_min(out)), 1.0)


class OfflineTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.data_dir = _tempdir(self)

  @parameterized.parameters('cifar10', 'cifar100', 'imagenet2012')
  def test_not_prepared_fails_fast(self, name):
    cfg = data.default_config(name)
    cfg.data_dir = self.data_dir
    start = time.monotonic()
    with self.assertRaises(data.DatasetNotPreparedError) as e:
      data.build_dataset(cfg, 'train', 8, training=True)
    self.assertLess(time.monotonic() - start, 10.0)
    msg = str(e.exception)
    self.assertIn(repr(name), msg)
    self.assertIn(self.data_dir, msg)
    self.assertIn(f'tfds build {name} --data_dir={self.data_dir}', msg)
    self.assertIn('download=True', msg)
    if name == 'imagenet2012':
      self.assertIn('--manual_dir=', msg)
      self.assertIn('ILSVRC2012_img_train.tar', msg)
    self.assertIsInstance(e.exception, ValueError)
    with self.assertRaises(data.DatasetNotPreparedError):
      data.raw_images(cfg, 'test', 2)

  def test_info_without_data(self):
    cfg = data.default_config('imagenet2012')
    cfg.data_dir = self.data_dir
    sizes = data.dataset_info(cfg).split_sizes
    self.assertEqual(sizes['full_train'], 1_281_167)
    self.assertEqual(sizes['test'], 50_000)

  def test_download_without_manual_tars_fails_fast(self):
    cfg = data.default_config('imagenet2012')
    cfg.data_dir, cfg.download = self.data_dir, True
    cfg.manual_dir = _tempdir(self)
    with mock.patch.object(tfds.core.DatasetBuilder,
                           'download_and_prepare') as prepare:
      with self.assertRaisesRegex(data.DatasetNotPreparedError,
                                  'ILSVRC2012_img_val.tar'):
        data.build_dataset(cfg, 'train', 8, training=True)
    prepare.assert_not_called()

  def test_download_with_unreachable_host_fails_fast(self):
    cfg = data.default_config('cifar10')
    cfg.data_dir, cfg.download = self.data_dir, True
    no_proxy = {k: '' for k in ('https_proxy', 'HTTPS_PROXY', 'all_proxy')}
    with mock.patch.dict(os.environ, no_proxy), \
         mock.patch.object(socket, 'create_connection',
                           side_effect=OSError('no route')), \
         mock.patch.object(tfds.core.DatasetBuilder,
                           'download_and_prepare') as prepare:
      with self.assertRaisesRegex(data.DatasetNotPreparedError,
                                  'www.cs.toronto.edu is unreachable'):
        data.build_dataset(cfg, 'train', 8, training=True)
    prepare.assert_not_called()

  def test_download_passes_manual_dir(self):
    manual = _tempdir(self)
    for f in ('ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar'):
      open(os.path.join(manual, f), 'w').close()
    cfg = data.default_config('imagenet2012')
    cfg.data_dir, cfg.download = self.data_dir, True
    cfg.manual_dir = manual
    with mock.patch.object(tfds.core.DatasetBuilder, 'download_and_prepare',
                           side_effect=RuntimeError('stop')) as prepare:
      with self.assertRaisesRegex(RuntimeError, 'stop'):
        data.build_dataset(cfg, 'train', 8, training=True)
    config = prepare.call_args.kwargs['download_config']
    self.assertEqual(str(config.manual_dir), manual)


if __name__ == '__main__':
  absltest.main()
