"""Tests of the user's data sources (data.source): an image folder written by
the test, in-process tf.data datasets, and any tfds dataset on mock data."""

import os
import re
import tempfile
import time

from absl.testing import absltest
from absl.testing import parameterized
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from aps_tf import config_check
from aps_tf import data
from aps_tf import errors
from aps_tf.data import sources


def _write_folder(root, classes=('cat', 'dog', 'eel'), per_class=6, size=(20, 14),
                  seed=0):
  """PNG images, class c filled with brightness 40 + 80 c plus noise."""
  rng = np.random.default_rng(seed)
  for c, name in enumerate(classes):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    for i in range(per_class):
      img = np.clip(40 + 80 * c + rng.integers(-20, 20, size + (3,)), 0, 255)
      tf.io.write_file(os.path.join(root, name, f'{i}.png'),
                       tf.io.encode_png(img.astype(np.uint8)))
  return root


def _cfg(source, size=8, **overrides):
  cfg = data.default_config()
  cfg.source, cfg.image_size = source, size
  cfg.update(overrides)
  return cfg


class FolderTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = cls.enterClassContext(tempfile.TemporaryDirectory())
    cls.flat = _write_folder(os.path.join(cls.root, 'flat'))
    _write_folder(os.path.join(cls.root, 'split', 'train'), per_class=5)
    _write_folder(os.path.join(cls.root, 'split', 'test'), per_class=2, seed=1)

  def test_flat_folder_splits_and_classes(self):
    cfg = _cfg(f'folder:{self.flat}')
    info = data.dataset_info(cfg)
    self.assertEqual(info.class_names, ('cat', 'dog', 'eel'))
    self.assertEqual(info.num_classes, 3)
    self.assertEqual(info.image_shape, (8, 8, 3))
    sizes = info.split_sizes
    self.assertEqual(sizes['test'], 4)  # round(0.2 * 18) held out, stratified
    self.assertEqual(sizes['train'] + sizes['reward'], 14)
    self.assertEqual(sizes['full_train'], 14)
    parts = {s: sources.arrays(cfg, s) for s in ('train', 'reward', 'test')}
    seen = [x.tobytes() for s in parts.values() for x in parts_images(s)]
    self.assertLen(set(seen), 18)  # disjoint and complete
    # Labels follow the class directories: brightness rises with the label.
    x, y = sources.arrays(cfg, 'full_train')
    means = [x[y == c].mean() for c in range(3)]
    self.assertEqual(means, sorted(means))

  def test_train_test_subfolders(self):
    cfg = _cfg(f'folder:{os.path.join(self.root, "split")}')
    info = data.dataset_info(cfg)
    self.assertEqual(info.split_sizes['test'], 6)
    self.assertEqual(info.split_sizes['full_train'], 15)

  def test_pipeline_batches_normalised_with_measured_stats(self):
    cfg = _cfg(f'folder:{self.flat}', augment=False)
    info = data.dataset_info(cfg)
    x, _ = sources.arrays(cfg, 'full_train')
    np.testing.assert_allclose(info.mean, x.reshape(-1, 3).mean(0), atol=1e-3)
    images, labels = next(iter(data.build_dataset(cfg, 'full_train', 14, training=False,
                                                  repeat=False)))
    self.assertEqual(images.shape, (14, 8, 8, 3))
    np.testing.assert_allclose(
        images.numpy(), (x.astype(np.float32) - np.array(info.mean)) / np.array(info.std),
        rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels.numpy(), sources.arrays(cfg, 'full_train')[1])

  @parameterized.named_parameters(
      ('none', 'none', 0.0, 1.0), ('unit', 'unit', 0.0, 255.0),
      ('symmetric', 'symmetric', 127.5, 127.5))
  def test_normalization_modes(self, mode, mean, std):
    cfg = _cfg(f'folder:{self.flat}', normalization=mode)
    info = data.dataset_info(cfg)
    self.assertEqual(info.mean, (mean,) * 3)
    self.assertEqual(info.std, (std,) * 3)
    raw = data.raw_images(cfg, 'test', 2)
    out = data.serving_preprocess(cfg, tf.constant(raw)).numpy()
    np.testing.assert_allclose(out, (raw - mean) / std, rtol=1e-6)
    record = data.preprocessing_record(cfg)
    self.assertEqual(record['normalization'], mode)
    self.assertEqual(record['class_names'], ['cat', 'dog', 'eel'])
    self.assertEqual(record['resize'], 'bilinear to 8x8')

  def test_grayscale(self):
    cfg = _cfg(f'folder:{self.flat}', channels=1)
    self.assertEqual(data.dataset_info(cfg).image_shape, (8, 8, 1))

  def test_missing_folder_is_a_user_error(self):
    cfg = _cfg('folder:/no/such/dir')
    with self.assertRaisesRegex(errors.UserError, '/no/such/dir is not a directory'):
      data.dataset_info(cfg)
    empty = self.enter_context(tempfile.TemporaryDirectory())
    os.makedirs(os.path.join(empty, 'a'))
    with self.assertRaisesRegex(errors.UserError, 'No images found'):
      data.dataset_info(_cfg(f'folder:{empty}'))


def parts_images(part):
  return part[0]


class PythonSourceTest(parameterized.TestCase):

  def tearDown(self):
    sources.unregister('t')
    super().tearDown()

  def _ds(self, n=20, dtype=np.uint8, scale=255):
    rng = np.random.default_rng(0)
    x = (rng.random((n, 12, 12, 1)) * scale).astype(dtype)
    return tf.data.Dataset.from_tensor_slices((x, np.arange(n) % 4)), x

  @parameterized.named_parameters(('unbatched', None), ('batched', 6))
  def test_registered_dataset(self, batch):
    ds, x = self._ds()
    self.assertEqual(data.register('t', ds.batch(batch) if batch else ds), 'python:t')
    cfg = _cfg('python:t', size=12)
    info = data.dataset_info(cfg)
    self.assertEqual(info.num_classes, 4)
    self.assertEqual(info.image_shape, (12, 12, 1))
    self.assertEqual(info.split_sizes['test'] + info.split_sizes['full_train'], 20)
    got = np.concatenate([sources.arrays(cfg, s)[0] for s in ('full_train', 'test')])
    self.assertCountEqual([a.tobytes() for a in got], [a.tobytes() for a in x])

  def test_train_and_test_dict(self):
    ds, _ = self._ds()
    data.register('t', {'train': ds.take(12), 'test': ds.skip(12)})
    sizes = data.dataset_info(_cfg('python:t', size=12)).split_sizes
    self.assertEqual((sizes['full_train'], sizes['test']), (12, 8))

  def test_reregistering_rereads(self):
    ds, _ = self._ds()
    data.register('t', ds)
    self.assertEqual(data.dataset_info(_cfg('python:t')).split_sizes['test'], 4)
    data.register('t', ds.take(10))
    self.assertEqual(data.dataset_info(_cfg('python:t')).split_sizes['test'], 2)

  def test_unit_scale_floats_refused(self):
    ds, _ = self._ds(dtype=np.float32, scale=1.0)
    data.register('t', ds)
    with self.assertRaisesRegex(errors.UserError, r'\[0, 1\].*0\.\.255'):
      data.dataset_info(_cfg('python:t'))

  def test_unregistered_and_bad_objects(self):
    with self.assertRaisesRegex(errors.UserError, "no dataset registered under 'nope'"):
      data.dataset_info(_cfg('python:nope'))
    with self.assertRaisesRegex(errors.UserError, 'expected a tf.data.Dataset'):
      data.register('t', np.zeros((3, 4, 4, 1)))
    with self.assertRaisesRegex(errors.UserError, "keys \\['val'\\]"):
      data.register('t', {'val': self._ds()[0]})


_MNIST_SIZES = {'train': 30, 'test': 10}


def _write_metadata(data_dir, name, sizes):
  b = tfds.builder(name, data_dir=data_dir)
  b.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0) for s, n in sizes.items()]))
  b.data_path.mkdir(parents=True, exist_ok=True)
  b.info.write_to_directory(b.data_path)


def _fake_as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
  """Example i of 'name[lo:hi]': image filled with i, label i % 10."""
  del decoders, read_config, shuffle_files
  name, lo, hi = re.fullmatch(r'(\w+)\[(\d+):(\d+)\]', split).groups()
  offset = 0 if name == 'train' else 100
  i = np.arange(int(lo), int(hi))
  images = np.broadcast_to((i + offset).astype(np.uint8)[:, None, None, None],
                           (len(i), 28, 28, 1)).copy()
  return tf.data.Dataset.from_tensor_slices({'image': images, 'label': i % 10})


class TfdsSourceTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = cls.enterClassContext(tempfile.TemporaryDirectory())
    _write_metadata(cls.data_dir, 'mnist', _MNIST_SIZES)

  def setUp(self):
    super().setUp()
    self.enter_context(tfds.testing.mock_data(
        data_dir=self.data_dir, policy=tfds.testing.MockPolicy.USE_FILES,
        as_dataset_fn=_fake_as_dataset))

  def cfg(self, **overrides):
    return _cfg('tfds:mnist', size=16, **{'data_dir': self.data_dir, **overrides})

  def test_info_from_metadata(self):
    info = data.dataset_info(self.cfg())
    self.assertEqual(info.num_classes, 10)
    self.assertEqual(info.image_shape, (16, 16, 1))
    self.assertEqual(info.split_sizes,
                     {'train': 15, 'reward': 15, 'full_train': 30, 'test': 10})
    # Measured on the training images (values 0..29 here).
    self.assertAlmostEqual(info.mean[0], 14.5, places=3)
    self.assertAlmostEqual(info.std[0], np.arange(30).std(), places=2)

  def test_batches_resized_and_disjoint(self):
    cfg = self.cfg(augment=False, normalization='none')
    seen = {}
    for split in ('train', 'reward', 'test'):
      x, y = next(iter(data.build_dataset(cfg, split, 5, training=False, repeat=False)))
      self.assertEqual(x.shape, (5, 16, 16, 1))
      seen[split] = set(x.numpy()[:, 0, 0, 0].astype(int))
      np.testing.assert_array_equal(y.numpy() % 10, x.numpy()[:, 0, 0, 0].astype(int) % 10)
    self.assertEqual(seen['train'], set(range(5)))
    self.assertEqual(seen['reward'], set(range(15, 20)))
    self.assertEqual(seen['test'], set(range(100, 105)))

  def test_not_prepared_fails_fast(self):
    cfg = self.cfg(data_dir=self.enter_context(tempfile.TemporaryDirectory()))
    cfg.source = 'tfds:fashion_mnist'
    start = time.monotonic()
    with self.assertRaises(data.DatasetNotPreparedError) as e:
      data.dataset_info(cfg)
    self.assertLess(time.monotonic() - start, 10.0)
    self.assertIn('tfds build fashion_mnist', str(e.exception))
    with self.assertRaises(data.DatasetNotPreparedError):
      data.check_prepared(cfg)

  def test_unknown_name(self):
    with self.assertRaisesRegex(errors.UserError, 'tfds:no_such_set: no tfds dataset'):
      cfg = self.cfg()
      cfg.source = 'tfds:no_such_set'
      data.dataset_info(cfg)


class ConfigTest(parameterized.TestCase):

  @parameterized.parameters('mnist', 'tfds:', 'zip:x', 'folder')
  def test_bad_source(self, source):
    c = ml_collections.ConfigDict({'data': _cfg(source)})
    with self.assertRaisesRegex(errors.ConfigError, 'data.source.*folder:DIR'):
      config_check.check_data(c.data)

  def test_bad_normalization(self):
    with self.assertRaisesRegex(errors.ConfigError, 'data.normalization.*mean_std'):
      config_check.check_data(_cfg('', normalization='imagenet'))

  def test_builtin_unchanged(self):
    info = data.dataset_info(data.default_config())
    self.assertEqual(info.name, 'digits')
    self.assertEqual(info.normalization, 'mean_std')
    self.assertEqual(data.preprocessing_record(data.default_config())['mean'], [77.85])



if __name__ == '__main__':
  absltest.main()
